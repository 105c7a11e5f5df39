//! Support code for whole-system tests.
