//! Compact-model loading (`certify_core::compact`) from arbitrary bytes: an error or a model,
//! never a panic; a loaded model of modest size certifies an input without panicking.
//!
//! The header's CRC-32 is re-stamped over the fuzzed bytes first (when they are long enough to
//! hold a header), so that mutations reach the structural checks behind the checksum instead of
//! all being rejected by it; the checksum check itself is covered by `core/tests/compact.rs`.
#![no_main]

use certify_core::compact::format::{model_crc, CRC_FIELD};
use certify_core::compact::{AlignedModel, CompactModel};
use libfuzzer_sys::fuzz_target;

/// Byte offset of the header's `file_len` field.
const FILE_LEN_FIELD: usize = 36;

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    if bytes.len() >= 64 {
        let file_len = u32::from_le_bytes(bytes[FILE_LEN_FIELD..FILE_LEN_FIELD + 4].try_into().unwrap()) as usize;
        if (64..=bytes.len()).contains(&file_len) {
            let crc = model_crc(&bytes[..file_len]);
            bytes[CRC_FIELD..CRC_FIELD + 4].copy_from_slice(&crc.to_le_bytes());
        }
    }
    let aligned = AlignedModel::new(&bytes);
    let Ok(model) = CompactModel::load(aligned.as_bytes()) else { return };
    if model.input_len() <= 1 << 16 && model.scratch_size() <= 1 << 24 {
        let x = vec![0.5f32; model.input_len()];
        let mut scratch = vec![0u8; model.scratch_size()];
        if let Ok(c) = model.certify(&x, &mut scratch) {
            assert_eq!(c.logits().len(), model.num_classes());
        }
    }
});
