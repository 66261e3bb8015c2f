//! Integration tests of certify-gpu: shader validation and uniform layouts (no device), and the
//! GPU path against the CPU reference (`certify-core` / `certify-bounds`) on a device.
//!
//! Device tests print a reason and pass when no adapter exists, unless `REQUIRE_GPU=1`, when
//! they fail.

mod device;
mod shaders;
mod train;
