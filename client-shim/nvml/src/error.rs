//! NVML status codes (`nvmlReturn_t`), by NVML's own numbers, and the text
//! `nvmlErrorString` gives for each.

use thiserror::Error;

/// `nvmlReturn_t`: 0 is success.
pub type NvmlReturn = u32;

/// A non-success `nvmlReturn_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("{} ({})", description(self.0), self.0)]
pub struct NvmlError(pub NvmlReturn);

pub type NvmlResult<T = ()> = Result<T, NvmlError>;

macro_rules! codes {
    ($( $konst:ident = $num:expr, $text:literal; )*) => {
        impl NvmlError {
            $( pub const $konst: NvmlError = NvmlError($num); )*
        }

        /// What `nvmlErrorString` says for a status, NUL-terminated for C.
        pub fn description_c(code: NvmlReturn) -> &'static str {
            match code {
                0 => "Success\0",
                $( $num => concat!($text, "\0"), )*
                _ => "Unknown Error\0",
            }
        }
    };
}

codes! {
    UNINITIALIZED = 1, "Uninitialized";
    INVALID_ARGUMENT = 2, "Invalid Argument";
    NOT_SUPPORTED = 3, "Not Supported";
    NO_PERMISSION = 4, "Insufficient Permissions";
    ALREADY_INITIALIZED = 5, "Already Initialized";
    NOT_FOUND = 6, "Not Found";
    INSUFFICIENT_SIZE = 7, "Insufficient Size";
    INSUFFICIENT_POWER = 8, "Insufficient External Power";
    DRIVER_NOT_LOADED = 9, "Driver Not Loaded";
    TIMEOUT = 10, "Timeout";
    IRQ_ISSUE = 11, "Interrupt Request Issue";
    LIBRARY_NOT_FOUND = 12, "NVML Shared Library Not Found";
    FUNCTION_NOT_FOUND = 13, "Function Not Found";
    CORRUPTED_INFOROM = 14, "Corrupted infoROM";
    GPU_IS_LOST = 15, "GPU is lost";
    RESET_REQUIRED = 16, "GPU requires restart";
    OPERATING_SYSTEM = 17, "The operating system has blocked the request";
    LIB_RM_VERSION_MISMATCH = 18, "RM has detected an NVML/RM version mismatch";
    IN_USE = 19, "In use by another client";
    MEMORY = 20, "Insufficient Memory";
    NO_DATA = 21, "No data";
    VGPU_ECC_NOT_SUPPORTED = 22, "The requested vgpu operation is not available on target device, because ECC is enabled";
    INSUFFICIENT_RESOURCES = 23, "Ran out of critical resources, other than memory";
    FREQ_NOT_SUPPORTED = 24, "Frequency not supported";
    ARGUMENT_VERSION_MISMATCH = 25, "Argument version mismatch";
    DEPRECATED = 26, "Deprecated";
    NOT_READY = 27, "Not Ready";
    GPU_NOT_FOUND = 28, "GPU not found";
    INVALID_STATE = 29, "Invalid state";
    RESET_TYPE_NOT_SUPPORTED = 30, "Reset type not supported";
    UNKNOWN = 999, "Unknown Error";
}

/// What `nvmlErrorString` says for a status.
pub fn description(code: NvmlReturn) -> &'static str {
    let s = description_c(code);
    &s[..s.len() - 1]
}

/// The NVML status for a CUDA driver status from `libcuda.so.1`.
pub fn from_cuda(status: u32) -> NvmlError {
    match status {
        // CUDA_ERROR_NOT_INITIALIZED, CUDA_ERROR_DEINITIALIZED
        3 | 4 => NvmlError::UNINITIALIZED,
        // CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_INVALID_DEVICE
        1 | 101 => NvmlError::INVALID_ARGUMENT,
        // CUDA_ERROR_NO_DEVICE
        100 => NvmlError::DRIVER_NOT_LOADED,
        // CUDA_ERROR_DEVICE_UNAVAILABLE: the shim lost its server.
        46 => NvmlError::GPU_IS_LOST,
        // CUDA_ERROR_NOT_SUPPORTED
        801 => NvmlError::NOT_SUPPORTED,
        _ => NvmlError::UNKNOWN,
    }
}

/// Turn a status into a result.
pub fn check(code: NvmlReturn) -> NvmlResult {
    match code {
        0 => Ok(()),
        c => Err(NvmlError(c)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_nvmls() {
        assert_eq!(description(0), "Success");
        assert_eq!(description(1), "Uninitialized");
        assert_eq!(description(2), "Invalid Argument");
        assert_eq!(description(7), "Insufficient Size");
        assert_eq!(description(12), "NVML Shared Library Not Found");
        assert_eq!(description(999), "Unknown Error");
        assert_eq!(description(12345), "Unknown Error");
        assert!(description_c(3).ends_with('\0'));
        assert_eq!(NvmlError::NOT_FOUND.to_string(), "Not Found (6)");
    }

    #[test]
    fn cuda_statuses_map() {
        assert_eq!(from_cuda(3), NvmlError::UNINITIALIZED);
        assert_eq!(from_cuda(101), NvmlError::INVALID_ARGUMENT);
        assert_eq!(from_cuda(46), NvmlError::GPU_IS_LOST);
        assert_eq!(from_cuda(100), NvmlError::DRIVER_NOT_LOADED);
        assert_eq!(from_cuda(700), NvmlError::UNKNOWN);
        assert_eq!(check(0), Ok(()));
        assert_eq!(check(9), Err(NvmlError::DRIVER_NOT_LOADED));
    }
}
