//! Data-path resolution (`certify MODEL --data PATH [--labels L]`): a directory of files with
//! fuzzed names, a fuzzed choice of `PATH` and `L`. Resolution gives an error or an existing
//! (images, labels) pair of files consistent with what was asked, never a panic; loading the
//! pair (empty files) gives an error, never a panic.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use certify_cli::data;
use libfuzzer_sys::fuzz_target;

/// One scratch directory per fuzzing process, emptied before each input.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("certify-fuzz-data-path-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("scratch directory");
        d
    })
}

fn clear(dir: &Path) {
    for e in std::fs::read_dir(dir).expect("scratch directory").flatten() {
        let p = e.path();
        if p.is_dir() {
            std::fs::remove_dir_all(&p).expect("clear scratch");
        } else {
            std::fs::remove_file(&p).expect("clear scratch");
        }
    }
}

/// A usable file name from fuzzed bytes (no separators, not `.`/`..`, not too long).
fn name(raw: &[u8]) -> Option<String> {
    let s: String = String::from_utf8_lossy(raw).chars().map(|c| if c == '/' || c == '\0' { '_' } else { c }).collect();
    let s: String = s.chars().take(80).collect();
    (!s.is_empty() && s != "." && s != "..").then_some(s)
}

fuzz_target!(|bytes: &[u8]| {
    let Some((&flags, rest)) = bytes.split_first() else { return };
    let dir = scratch();
    clear(dir);
    let mut names: Vec<String> = rest.split(|&b| b == b'\n').filter_map(name).take(12).collect();
    names.sort();
    names.dedup();
    for (i, n) in names.iter().enumerate() {
        let p = dir.join(n);
        // A name that ends in `.d` is a directory, so that "is it a file" checks matter.
        if n.ends_with(".d") {
            std::fs::create_dir_all(&p).expect("create dir");
        } else {
            std::fs::write(&p, [i as u8]).expect("create file");
        }
    }
    let pick = |k: u8| -> PathBuf {
        match names.len() {
            0 => dir.join("absent"),
            n => dir.join(&names[k as usize % n]),
        }
    };
    let data_path = match flags & 3 {
        0 => dir.to_path_buf(),
        1 | 2 => pick(flags >> 4),
        _ => dir.join("absent-images-idx3-ubyte"),
    };
    let labels = (flags & 4 != 0).then(|| pick(flags >> 3));
    match data::resolve(&data_path, labels.as_deref()) {
        Ok((images, labels_found)) => {
            assert!(images.is_file(), "{images:?} is not a file");
            assert!(labels_found.is_file(), "{labels_found:?} is not a file");
            if let Some(l) = &labels {
                assert_eq!(&labels_found, l);
            } else {
                assert_eq!(labels_found.parent(), images.parent());
            }
            if data_path.is_dir() {
                assert_eq!(images.parent(), Some(dir));
            } else {
                assert_eq!(images, data_path);
            }
            assert!(data::load(&data_path, labels.as_deref(), None).is_err(), "one-byte files cannot be a data set");
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
        }
    }
});
