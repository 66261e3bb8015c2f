//! .npy parsing (raw or gzip-compressed bytes, as `certify --data x.npy` reads a file): an
//! array or an error, never a panic, with allocations bounded by what the bytes declare and
//! contain. The same bytes gzip-compressed decode to the same array; a parsed array is used
//! both as images and as labels, as the binary does.
#![no_main]

use std::io::Write;
use std::path::{Path, PathBuf};

use certify_cli::data::{self, Array};
use libfuzzer_sys::fuzz_target;

fn decode(bytes: Vec<u8>) -> Option<Array> {
    data::parse_file_bytes(Path::new("x_test.npy"), bytes).ok()
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
    let Some(array) = raw else { return };
    let count = array.shape.first().copied().unwrap_or(0);
    if count == 0 || count > 1 << 16 || array.len() > 1 << 24 {
        return;
    }
    // As labels, a 1-D prefix of the same array.
    let labels =
        data::parse_file_bytes(Path::new("y_test.npy"), data::npy::encode(data::Dtype::U8, &[count], &vec![1; count]))
            .expect("well-formed labels");
    let _ = data::from_arrays(labels.clone(), &array, PathBuf::from("y"), PathBuf::from("x"), Some(3));
    if let Ok(ds) = data::from_arrays(array, &labels, PathBuf::from("x"), PathBuf::from("y"), None) {
        assert_eq!(ds.to_f32().len(), ds.len * ds.sample_len());
        // As the binary prepares it for a model taking the samples as they are, and a
        // channels-first view of them.
        let shape = ds.sample_shape.clone();
        if let Ok(p) = data::prepare(ds.clone(), &shape, Some(2.0), &[], &[]) {
            let last = p.batch(p.len() - 1, 1);
            assert!(last.iter().all(|v| v.is_finite()));
        }
        if shape.len() == 3 {
            let chw = [shape[2], shape[0], shape[1]];
            let _ = data::prepare(ds, &chw, None, &[0.5, 0.25, 0.1][..shape[2].min(3)], &[0.5]).map(|p| p.batch(0, 1));
        }
    }
});
