//! IDX parsing (raw or gzip-compressed bytes, as `certify --data` reads a file): an array or an
//! error, never a panic, with allocations bounded by what the bytes declare and contain. The same
//! bytes gzip-compressed decode to the same array; a parsed images array is turned into a data
//! set and preprocessed as the binary does.
#![no_main]

use std::io::Write;
use std::path::{Path, PathBuf};

use certify_cli::data::{self, idx, Array, Dtype};
use libfuzzer_sys::fuzz_target;

fn decode(bytes: Vec<u8>) -> Option<Array> {
    data::parse_file_bytes(Path::new("fuzz-images-idx3-ubyte"), bytes).ok()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).expect("in-memory gzip");
    e.finish().expect("in-memory gzip")
}

fuzz_target!(|bytes: &[u8]| {
    let raw = decode(bytes.to_vec());
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        let zipped = decode(gzip(bytes));
        match (&raw, &zipped) {
            (Some(a), Some(b)) => assert!(a.shape == b.shape && a.payload() == b.payload()),
            (None, None) => {}
            _ => panic!("gzip changed whether the bytes parse"),
        }
    }
    let Some(images) = raw else { return };
    let count = images.shape.first().copied().unwrap_or(0);
    if count > 1 << 16 {
        return;
    }
    let labels = idx::parse(Path::new("labels"), idx::encode(Dtype::U8, &[count as u32], &vec![0; count]))
        .expect("well-formed labels");
    let limit = bytes.last().map(|&b| b as usize).filter(|&b| b > 0);
    if let Ok(ds) = data::from_arrays(images, &labels, PathBuf::from("i"), PathBuf::from("l"), limit) {
        assert_eq!(ds.to_f32().len(), ds.len * ds.sample_len());
        let shape = ds.sample_shape.clone();
        if let Ok(p) = data::prepare(ds, &shape, None, &[0.5], &[0.25]) {
            assert!(p.batch(0, p.len()).iter().all(|v| v.is_finite()));
        }
    }
});
