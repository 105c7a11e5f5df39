//! Parsing of the code images CUDA programs hand to the driver: fat-binary
//! wrappers, fat binaries, cubin ELF images and PTX text.
