//! Code images by content: a directory of files named by their SHA-256, shared
//! by every worker of a server, so that a pool ships each fat binary once.
//!
//! A client names an image by hash first and sends the bytes only when the
//! server does not have them. The server never trusts a client's hash: it
//! hashes what it receives and files it under the hash it computed, and
//! checks the hash again when it reads a file back, so a corrupt file is
//! dropped rather than loaded.

use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

pub type Sha256Hash = [u8; 32];

pub fn sha256(bytes: &[u8]) -> Sha256Hash {
    Sha256::digest(bytes).into()
}

fn hex(h: &Sha256Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone)]
pub struct ImageCache {
    dir: PathBuf,
    max_bytes: u64,
}

impl ImageCache {
    /// A cache in `dir`, created if need be; `None` (with a warning) when the
    /// directory cannot be made, in which case images are simply not cached.
    pub fn open(dir: &Path, max_bytes: u64) -> Option<ImageCache> {
        match std::fs::create_dir_all(dir) {
            Ok(()) => Some(ImageCache {
                dir: dir.to_path_buf(),
                max_bytes,
            }),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), "image cache disabled: cannot create its directory: {e}");
                None
            }
        }
    }

    fn path(&self, hash: &Sha256Hash) -> PathBuf {
        self.dir.join(hex(hash))
    }

    /// The image with this hash, if the cache holds an intact copy.
    pub fn get(&self, hash: &Sha256Hash) -> Option<Vec<u8>> {
        let path = self.path(hash);
        let bytes = std::fs::read(&path).ok()?;
        if &sha256(&bytes) != hash {
            tracing::warn!(file = %path.display(), "cached image does not match its hash; removing it");
            let _ = std::fs::remove_file(&path);
            return None;
        }
        Some(bytes)
    }

    /// File an image under the hash of its bytes. Failures (a full disk, a
    /// read-only directory) are logged and otherwise ignored: the cache only
    /// saves a transfer.
    pub fn put(&self, bytes: &[u8]) -> Sha256Hash {
        let hash = sha256(bytes);
        let path = self.path(&hash);
        if path.exists() {
            return hash;
        }
        if bytes.len() as u64 > self.max_bytes {
            return hash;
        }
        self.make_room(bytes.len() as u64);
        let tmp = self.dir.join(format!(".{}.{}", hex(&hash), std::process::id()));
        let written = std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_data()))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(dir = %self.dir.display(), "cannot cache an image ({} bytes): {e}", bytes.len());
        }
        hash
    }

    /// Remove the least recently modified images until `incoming` more
    /// bytes fit under the limit.
    fn make_room(&self, incoming: u64) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                let modified = m.modified().ok()?;
                m.is_file().then(|| (modified, m.len(), e.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        if total + incoming <= self.max_bytes {
            return;
        }
        files.sort();
        for (_, len, path) in files {
            if total + incoming <= self.max_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("gpupool-images-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn stores_by_content_and_checks_on_read() {
        let dir = scratch("content");
        let cache = ImageCache::open(&dir, 1 << 20).unwrap();
        let h = cache.put(b"image one");
        assert_eq!(h, sha256(b"image one"));
        assert_eq!(cache.get(&h).as_deref(), Some(&b"image one"[..]));
        assert_eq!(cache.get(&sha256(b"never stored")), None);
        // A file altered on disk is not served, and is removed.
        std::fs::write(dir.join(hex(&h)), b"tampered").unwrap();
        assert_eq!(cache.get(&h), None);
        assert!(!dir.join(hex(&h)).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn evicts_to_stay_under_its_limit() {
        let dir = scratch("evict");
        let cache = ImageCache::open(&dir, 100).unwrap();
        let a = cache.put(&[1u8; 60]);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = cache.put(&[2u8; 60]);
        assert!(cache.get(&a).is_none(), "the older image made room");
        assert!(cache.get(&b).is_some());
        let big = cache.put(&[3u8; 200]);
        assert!(cache.get(&big).is_none(), "larger than the whole cache: not kept");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
