//! The NVML shim must be found as `libnvidia-ml.so.1` by the dynamic loader.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libnvidia-ml.so.1");
}
