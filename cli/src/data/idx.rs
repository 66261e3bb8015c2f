//! The IDX format of the MNIST files.
//!
//! A big-endian header: the magic `00 00 TT NN` (element type `TT`, `NN` dimensions), then `NN`
//! dimensions as `u32`, then the elements in row-major order, big-endian. Element types:
//! `0x08` u8, `0x09` i8, `0x0B` i16, `0x0C` i32, `0x0D` f32, `0x0E` f64. An images file has
//! at least two dimensions (the count, then the sample shape); a labels file has one.

use std::path::Path;

use super::{Array, Dtype};
use crate::error::Error;

/// The element type of an IDX type byte.
pub fn dtype(code: u8) -> Option<Dtype> {
    Some(match code {
        0x08 => Dtype::U8,
        0x09 => Dtype::I8,
        0x0B => Dtype::I16,
        0x0C => Dtype::I32,
        0x0D => Dtype::F32,
        0x0E => Dtype::F64,
        _ => return None,
    })
}

/// The IDX type byte of an element type, if IDX has one.
pub fn code(dtype: Dtype) -> Option<u8> {
    Some(match dtype {
        Dtype::U8 => 0x08,
        Dtype::I8 => 0x09,
        Dtype::I16 => 0x0B,
        Dtype::I32 => 0x0C,
        Dtype::F32 => 0x0D,
        Dtype::F64 => 0x0E,
        _ => return None,
    })
}

/// Parses the (decompressed) bytes of an IDX file, checking that the payload holds exactly the
/// elements the header declares.
pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Array, Error> {
    let mut magic = [0u8; 4];
    let head = bytes.get(..4).unwrap_or(&bytes);
    magic[..head.len()].copy_from_slice(head);
    let magic_err = || Error::IdxMagic { path: path.to_path_buf(), magic: u32::from_be_bytes(magic) };
    if bytes.len() < 4 {
        return Err(Error::Idx {
            path: path.to_path_buf(),
            reason: format!("the file holds {} bytes, fewer than the 4-byte magic number", bytes.len()),
        });
    }
    if magic[0] != 0 || magic[1] != 0 || magic[3] == 0 {
        return Err(magic_err());
    }
    let dtype = dtype(magic[2]).ok_or_else(magic_err)?;
    let ndims = magic[3] as usize;
    let header = 4 + 4 * ndims;
    let Some(raw_dims) = bytes.get(4..header) else {
        return Err(Error::Idx {
            path: path.to_path_buf(),
            reason: format!(
                "the header declares {ndims} dimensions ({header} header bytes) but the file holds only {} bytes",
                bytes.len()
            ),
        });
    };
    let dims = raw_dims.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as u64).collect();
    Array::new(path, dtype, true, dims, bytes, header)
}

/// Encodes an array as IDX bytes (big-endian), for tests and tools. `data` holds the elements
/// already encoded big-endian.
pub fn encode(dtype: Dtype, dims: &[u32], data_be: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, code(dtype).unwrap_or(0), dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data_be);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::maybe_gunzip;
    use std::io::Write;
    use std::path::PathBuf;

    fn p() -> PathBuf {
        PathBuf::from("data/x.idx")
    }

    fn values(a: &Array) -> Vec<f64> {
        let mut v = Vec::new();
        a.visit(0, a.len(), |x| v.push(x));
        v
    }

    pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn round_trip_every_dtype() {
        let want: [f64; 6] = [1.0, -2.0, 3.0, 100.0, 0.0, -7.0];
        let cases: Vec<(Dtype, Vec<u8>)> = vec![
            (Dtype::U8, vec![1, 254, 3, 100, 0, 249]),
            (Dtype::I8, want.iter().flat_map(|&v| (v as i8).to_be_bytes()).collect()),
            (Dtype::I16, want.iter().flat_map(|&v| (v as i16).to_be_bytes()).collect()),
            (Dtype::I32, want.iter().flat_map(|&v| (v as i32).to_be_bytes()).collect()),
            (Dtype::F32, want.iter().flat_map(|&v| (v as f32).to_be_bytes()).collect()),
            (Dtype::F64, want.iter().flat_map(|&v: &f64| v.to_be_bytes()).collect()),
        ];
        for (dt, data) in cases {
            let bytes = encode(dt, &[3, 2], &data);
            for raw in [bytes.clone(), gzip(&bytes)] {
                let a = parse(&p(), maybe_gunzip(&p(), raw, 1 << 20).unwrap()).unwrap();
                assert_eq!(a.dtype, dt);
                assert_eq!(a.shape, vec![3, 2]);
                let expect: Vec<f64> =
                    if dt == Dtype::U8 { vec![1.0, 254.0, 3.0, 100.0, 0.0, 249.0] } else { want.to_vec() };
                assert_eq!(values(&a), expect, "{dt:?}");
            }
        }
    }

    #[test]
    fn bad_magic() {
        let e = parse(&p(), vec![0; 16]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`data/x.idx`: IDX magic 0x00000000 is not an image (0x0803) or label (0x0801) file; expected an IDX \
             file (raw or gzip, as distributed for MNIST) or a .npy file"
        );
        for magic in [[1, 0, 8, 1], [0, 0, 0x0A, 1], [0, 0, 0x07, 3], [0x50, 0x4b, 3, 4]] {
            let mut b = magic.to_vec();
            b.extend([0; 8]);
            assert!(matches!(parse(&p(), b), Err(Error::IdxMagic { .. })));
        }
        assert!(matches!(parse(&p(), vec![0, 0]), Err(Error::Idx { .. })));
        assert!(matches!(parse(&p(), vec![]), Err(Error::Idx { .. })));
    }

    #[test]
    fn truncated_header_and_payload() {
        // Three dimensions declared, only one present.
        let e = parse(&p(), vec![0, 0, 8, 3, 0, 0, 0, 1]).unwrap_err();
        assert!(matches!(e, Error::Idx { .. }), "{e}");
        let mut b = encode(Dtype::U8, &[2, 2, 2], &[0; 8]);
        b.pop();
        let e = parse(&p(), b).unwrap_err();
        assert!(matches!(e, Error::Truncated { expected: 8, got: 7, .. }), "{e}");
        assert!(e.to_string().contains("truncated"), "{e}");
        let b = encode(Dtype::I32, &[2], &[0; 7]);
        assert!(matches!(parse(&p(), b), Err(Error::Truncated { expected: 8, got: 7, .. })));
    }

    #[test]
    fn trailing_bytes() {
        let b = encode(Dtype::U8, &[2, 2], &[0; 5]);
        let e = parse(&p(), b).unwrap_err();
        assert!(matches!(e, Error::TrailingBytes { expected: 4, got: 5, .. }), "{e}");
    }

    #[test]
    fn overflowing_dims_do_not_allocate() {
        let e = parse(&p(), encode(Dtype::F64, &[u32::MAX, u32::MAX, u32::MAX], &[])).unwrap_err();
        assert!(matches!(e, Error::DimsOverflow { .. }), "{e}");
        // Huge but not overflowing: a truncation error, not an allocation.
        let e = parse(&p(), encode(Dtype::U8, &[u32::MAX, 1 << 20], &[1, 2, 3])).unwrap_err();
        assert!(matches!(e, Error::Truncated { got: 3, .. }), "{e}");
    }

    #[test]
    fn gzip_output_is_capped() {
        let big = encode(Dtype::U8, &[4096], &[7; 4096]);
        let z = gzip(&big);
        assert!(maybe_gunzip(&p(), z.clone(), big.len() as u64).is_ok());
        let e = maybe_gunzip(&p(), z, 1000).unwrap_err();
        assert!(matches!(e, Error::TooLarge { limit: 1000, .. }), "{e}");
    }

    #[test]
    fn corrupt_gzip_is_an_error() {
        let z = gzip(&encode(Dtype::U8, &[64], &[3; 64]));
        let e = maybe_gunzip(&p(), z[..z.len() - 6].to_vec(), 1 << 20).unwrap_err();
        assert!(matches!(e, Error::Gzip { .. }), "{e}");
        let mut bad = z.clone();
        let n = bad.len();
        bad[n - 8] ^= 0xff; // CRC
        assert!(matches!(maybe_gunzip(&p(), bad, 1 << 20), Err(Error::Gzip { .. })));
    }
}
