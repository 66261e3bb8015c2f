//! The library part of the `certify` command-line tool: data set loading, its error type, and
//! the allocator setting of the training commands.

pub mod allocator;
pub mod data;
pub mod error;

pub use error::Error;
