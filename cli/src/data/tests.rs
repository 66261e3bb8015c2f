//! Tests of data set resolution, loading, validation and preprocessing.

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use super::*;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// `n` images of `h×w` u8 pixels (pixel value = image index + pixel index, wrapped) as IDX.
fn idx_images(n: u32, h: u32, w: u32) -> Vec<u8> {
    let data: Vec<u8> = (0..n * h * w).map(|i| ((i / (h * w)) + i % (h * w)) as u8).collect();
    idx::encode(Dtype::U8, &[n, h, w], &data)
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    idx::encode(Dtype::U8, &[labels.len() as u32], labels)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn f32_le(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn loads_idx_pair_raw_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let labels = [7u8, 2, 1];
    for (img, lab, gz) in [
        ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", false),
        ("a-images-idx3-ubyte.gz", "a-labels-idx1-ubyte.gz", true),
        ("b-images.idx3-ubyte", "b-labels.idx1-ubyte", false),
        // Mixed compression: the labels are found whichever exists.
        ("c-images-idx3-ubyte.gz", "c-labels-idx1-ubyte", false),
    ] {
        let images = idx_images(3, 4, 5);
        let ip = write(dir.path(), img, &if gz || img.ends_with(".gz") { gzip(&images) } else { images });
        let lbytes = idx_labels(&labels);
        let lp = write(dir.path(), lab, &if gz { gzip(&lbytes) } else { lbytes });
        assert_eq!(resolve(&ip, None).unwrap(), (ip.clone(), lp.clone()), "{img}");
        let d = load(&ip, None, None).unwrap();
        assert_eq!((d.len, d.sample_shape.clone(), d.labels.clone()), (3, vec![4, 5], vec![7, 2, 1]), "{img}");
        assert!(d.integer_pixels);
        assert_eq!(d.to_f32().len(), 60);
        let mut one = [0f32; 20];
        d.sample_into(1, &mut one);
        assert_eq!(one[..3], [1.0, 2.0, 3.0]);
        assert_eq!((d.images_path, d.labels_path), (ip, lp));
    }
}

#[test]
fn directory_prefers_the_test_split() {
    let dir = tempfile::tempdir().unwrap();
    for split in ["train", "t10k"] {
        write(dir.path(), &format!("{split}-images-idx3-ubyte.gz"), &gzip(&idx_images(2, 2, 2)));
        write(dir.path(), &format!("{split}-labels-idx1-ubyte.gz"), &gzip(&idx_labels(&[0, 1])));
    }
    write(dir.path(), "README.md", b"hello");
    let (i, l) = resolve(dir.path(), None).unwrap();
    assert_eq!(i, dir.path().join("t10k-images-idx3-ubyte.gz"));
    assert_eq!(l, dir.path().join("t10k-labels-idx1-ubyte.gz"));
    assert_eq!(load(dir.path(), None, None).unwrap().len, 2);

    // Only a training pair: that one.
    let only = tempfile::tempdir().unwrap();
    write(only.path(), "train-images-idx3-ubyte", &idx_images(2, 2, 2));
    write(only.path(), "train-labels-idx1-ubyte", &idx_labels(&[0, 1]));
    assert_eq!(resolve(only.path(), None).unwrap().0, only.path().join("train-images-idx3-ubyte"));
}

#[test]
fn directory_without_a_pair() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "t10k-images-idx3-ubyte.gz", &gzip(&idx_images(2, 2, 2)));
    write(dir.path(), "notes.txt", b"x");
    let e = resolve(dir.path(), None).unwrap_err();
    assert!(matches!(e, Error::NoDataset { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("X-images-idx3-ubyte[.gz] + X-labels-idx1-ubyte[.gz]") && msg.contains("--labels"), "{msg}");
    // With explicit labels the lone images file is enough.
    let lp = write(dir.path(), "my-labels", &idx_labels(&[3, 4]));
    assert_eq!(load(dir.path(), Some(&lp), None).unwrap().labels, vec![3, 4]);
}

#[test]
fn npy_naming_conventions() {
    let pairs = [
        ("images.npy", "labels.npy"),
        ("x.npy", "y.npy"),
        ("X.npy", "y.npy"),
        ("x_test.npy", "y_test.npy"),
        ("cifar_images.npy", "cifar_labels.npy"),
        ("cifar-images.npy", "cifar-labels.npy"),
    ];
    for (img, lab) in pairs {
        let dir = tempfile::tempdir().unwrap();
        let px = f32_le(&[0.5; 2 * 3 * 2 * 2]);
        let ip = write(dir.path(), img, &npy::encode(Dtype::F32, &[2, 3, 2, 2], &px));
        let lp =
            write(dir.path(), lab, &npy::encode(Dtype::I64, &[2], &[1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0]));
        assert_eq!(resolve(&ip, None).unwrap(), (ip.clone(), lp.clone()), "{img}");
        assert_eq!(resolve(dir.path(), None).unwrap(), (ip.clone(), lp), "{img} in a directory");
        let d = load(&ip, None, None).unwrap();
        assert_eq!((d.len, d.sample_shape.clone(), d.labels.clone()), (2, vec![3, 2, 2], vec![1, 9]));
        assert!(!d.integer_pixels);
    }
}

#[test]
fn explicit_labels_win_and_may_be_another_format() {
    let dir = tempfile::tempdir().unwrap();
    let ip = write(dir.path(), "images.npy", &npy::encode(Dtype::U8, &[2, 4], &[0, 1, 2, 3, 4, 5, 6, 7]));
    write(dir.path(), "labels.npy", &npy::encode(Dtype::U8, &[2], &[5, 5]));
    let other = write(dir.path(), "other.idx", &gzip(&idx_labels(&[1, 2])));
    let d = load(&ip, Some(&other), None).unwrap();
    assert_eq!(d.labels, vec![1, 2]);
    assert_eq!(d.labels_path, other);
    // Float labels with integral values are fine.
    let fl = write(dir.path(), "fl.npy", &npy::encode(Dtype::F64, &[2], &[1.0f64, 3.0].map(f64::to_le_bytes).concat()));
    assert_eq!(load(&ip, Some(&fl), None).unwrap().labels, vec![1, 3]);
    // (N, 1) labels are squeezed.
    let col = write(dir.path(), "col.npy", &npy::encode(Dtype::U8, &[2, 1], &[4, 6]));
    assert_eq!(load(&ip, Some(&col), None).unwrap().labels, vec![4, 6]);
    // A missing explicit labels file.
    let e = load(&ip, Some(&dir.path().join("nope.npy")), None).unwrap_err();
    assert!(matches!(e, Error::NotFound { what: "labels file", .. }), "{e}");
}

#[test]
fn missing_labels_file() {
    let dir = tempfile::tempdir().unwrap();
    let ip = write(dir.path(), "t10k-images-idx3-ubyte.gz", &gzip(&idx_images(2, 2, 2)));
    let e = load(&ip, None, None).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "labels file not found beside `{}`: expected `t10k-labels-idx1-ubyte[.gz]`; pass --labels PATH",
            ip.display()
        )
    );
    let ip = write(dir.path(), "x_val.npy", &npy::encode(Dtype::U8, &[1, 1], &[0]));
    let e = load(&ip, None, None).unwrap_err();
    assert!(e.to_string().contains("expected `y_val.npy` or `Y_val.npy`"), "{e}");
    let ip = write(dir.path(), "pixels.bin", &idx_images(1, 1, 1));
    let e = load(&ip, None, None).unwrap_err();
    assert!(e.to_string().contains("does not follow a known convention"), "{e}");
    let e = load(&dir.path().join("absent.npy"), None, None).unwrap_err();
    assert!(matches!(e, Error::NotFound { what: "data set", .. }), "{e}");
}

#[test]
fn limit_keeps_the_first_samples() {
    let dir = tempfile::tempdir().unwrap();
    let ip = write(dir.path(), "t10k-images-idx3-ubyte", &idx_images(5, 2, 2));
    write(dir.path(), "t10k-labels-idx1-ubyte", &idx_labels(&[0, 1, 2, 3, 4]));
    let d = load(&ip, None, Some(2)).unwrap();
    assert_eq!((d.len, d.labels.clone(), d.to_f32()), (2, vec![0, 1], vec![0.0, 1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 4.0]));
    assert_eq!(load(&ip, None, Some(50)).unwrap().len, 5);
    assert!(matches!(load(&ip, None, Some(0)), Err(Error::ZeroLimit)));
}

/// Builds a data set straight from encoded bytes.
fn from_bytes(images: Vec<u8>, labels: Vec<u8>) -> Result<Dataset, Error> {
    let (ip, lp) = (PathBuf::from("imgs.npy"), PathBuf::from("labs.npy"));
    let i = parse_array(&ip, images)?;
    let l = parse_array(&lp, labels)?;
    from_arrays(i, &l, ip, lp, None)
}

#[test]
fn mismatched_counts() {
    let e = from_bytes(idx_images(1000, 1, 2), idx_labels(&[0; 999])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "`imgs.npy`: 1000 images but 999 labels in `labs.npy`; pass the matching labels file with --labels PATH"
    );
}

#[test]
fn empty_data_set() {
    let e = from_bytes(idx_images(0, 2, 2), idx_labels(&[])).unwrap_err();
    assert_eq!(e.to_string(), "`imgs.npy` holds no images");
}

#[test]
fn nan_and_huge_pixels() {
    let mut px = vec![0.25f32; 4 * 20];
    px[3 * 20 + 17] = f32::NAN;
    let e = from_bytes(npy::encode(Dtype::F32, &[4, 4, 5], &f32_le(&px)), idx_labels(&[0; 4])).unwrap_err();
    assert_eq!(e.to_string(), "`imgs.npy`: pixel 17 of image 3 is NaN; every pixel must be a finite number");
    // Finite in f64 but not in f32.
    let mut px = [0.0f64; 2 * 3];
    px[4] = 1e300;
    let bytes: Vec<u8> = px.iter().flat_map(|v| v.to_le_bytes()).collect();
    let e = from_bytes(npy::encode(Dtype::F64, &[2, 3], &bytes), idx_labels(&[0; 2])).unwrap_err();
    assert!(matches!(e, Error::NonFinitePixel { image: 1, pixel: 1, .. }), "{e}");
}

#[test]
fn bad_labels() {
    let images = || idx_images(3, 2, 2);
    let neg = npy::encode(Dtype::I32, &[3], &[0i32, -1, 2].map(i32::to_le_bytes).concat());
    let e = from_bytes(images(), neg).unwrap_err();
    assert!(matches!(e, Error::BadLabel { index: 1, .. }), "{e}");
    let frac = npy::encode(Dtype::F32, &[3], &f32_le(&[0.0, 1.0, 2.5]));
    let e = from_bytes(images(), frac).unwrap_err();
    assert!(e.to_string().contains("label 2 is 2.5"), "{e}");
    let one_hot = npy::encode(Dtype::U8, &[3, 10], &[0; 30]);
    let e = from_bytes(images(), one_hot).unwrap_err();
    assert!(matches!(e, Error::Rank { role: "labels", .. }) && e.to_string().contains("one-hot"), "{e}");
    // Images that are 1-D look like a labels file.
    let e = from_bytes(idx_labels(&[1, 2, 3]), idx_labels(&[1, 2, 3])).unwrap_err();
    assert!(e.to_string().contains("is this a labels file?"), "{e}");
}

#[test]
fn label_out_of_range() {
    let d = from_bytes(idx_images(6, 1, 1), idx_labels(&[0, 1, 2, 3, 9, 12])).unwrap();
    assert!(d.check_labels(13).is_ok());
    let e = d.check_labels(10).unwrap_err();
    assert!(matches!(e, Error::LabelOutOfRange { index: 5, label: 12, num_classes: 10, .. }), "{e}");
    assert!(e.to_string().starts_with("label 12 of image 5 is out of range for a model with 10 classes"), "{e}");
}

/// Sample `i` of `p`, model-ready.
fn prepared_sample(p: &Prepared, i: usize) -> Vec<f32> {
    let mut out = vec![0f32; p.sample_len()];
    p.fill(i, &mut out);
    out
}

#[test]
fn prepare_scales_integers_and_normalises() {
    // u8 [2 samples, 2 channels, 1×2].
    let images = npy::encode(Dtype::U8, &[2, 2, 1, 2], &[0, 255, 51, 102, 255, 0, 0, 0]);
    let data = || from_bytes(images.clone(), idx_labels(&[0, 1])).unwrap();
    let shape = [2, 1, 2];
    let p = prepare(data(), &shape, None, &[], &[]).unwrap();
    assert_eq!(prepared_sample(&p, 0), [0.0, 1.0, 0.2, 0.4]);
    assert_eq!(p.batch(0, 2), [0.0, 1.0, 0.2, 0.4, 1.0, 0.0, 0.0, 0.0]);
    let mut g = [0f32; 8];
    p.gather(&[1, 0], &mut g);
    assert_eq!(g, [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.2, 0.4]);
    assert_eq!((p.domain.lo[0], p.domain.hi[0], p.domain.unit[0]), (0.0, 1.0, 1.0));
    // Per-channel values on the first axis.
    let p = prepare(data(), &shape, None, &[0.5, 0.0], &[0.5, 0.2]).unwrap();
    let s0 = prepared_sample(&p, 0);
    for (a, b) in s0.iter().zip([-1.0, 1.0, 1.0, 2.0]) {
        assert!((a - b).abs() < 1e-6, "{s0:?}");
    }
    assert_eq!((p.domain.lo[2], p.domain.unit[2]), (0.0, 5.0));
    let p = prepare(data(), &shape, Some(1.0), &[1.0], &[2.0]).unwrap();
    assert_eq!(prepared_sample(&p, 1), [127.0, -0.5, -0.5, -0.5]);

    // Floats are left alone unless a scale is given.
    let fl = npy::encode(Dtype::F32, &[1, 2, 2], &f32_le(&[2.0, 4.0, 6.0, 8.0]));
    let fdata = || from_bytes(fl.clone(), idx_labels(&[0])).unwrap();
    let p = prepare(fdata(), &[1, 2, 2], None, &[], &[]).unwrap();
    assert_eq!(prepared_sample(&p, 0), [2.0, 4.0, 6.0, 8.0]);
    assert_eq!((p.domain.lo[0], p.domain.hi[3]), (2.0, 8.0));
    let p = prepare(fdata(), &[4], Some(2.0), &[1.0], &[]).unwrap();
    assert_eq!(prepared_sample(&p, 0), [0.0, 1.0, 2.0, 3.0]);

    // Errors, with the messages the command line shows.
    for (scale, mean, std, msg) in [
        (Some(0.0), &[][..], &[][..], "--scale must be a positive number, got 0"),
        (Some(f32::NAN), &[], &[], "--scale must be a positive number, got NaN"),
        (None, &[], &[0.0], "--std values must be positive and --mean values finite"),
        (None, &[], &[-1.0], "--std values must be positive and --mean values finite"),
        (None, &[f32::INFINITY], &[], "--std values must be positive and --mean values finite"),
        (None, &[1.0, 2.0], &[1.0, 2.0, 3.0], "--mean has 2 values but --std has 3"),
        (
            None,
            &[1.0, 2.0, 3.0],
            &[],
            "3 per-channel --mean/--std values do not match the first or last axis of the data shape [2, 2]",
        ),
    ] {
        let e = prepare(fdata(), &[1, 2, 2], scale, mean, std).unwrap_err();
        assert!(matches!(e, Error::Preprocess { .. }), "{e}");
        assert_eq!(e.to_string(), msg);
    }
    let e = prepare(fdata(), &[1, 2, 2], None, &[], &[1e-45]).unwrap_err();
    assert!(e.to_string().contains("non-finite"), "{e}");
    let e = prepare(fdata(), &[1, 3, 3], None, &[], &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "`imgs.npy`: samples have shape [2, 2] (4 values) but the model expects per-sample input [1, 3, 3] (9 values)"
    );
}

#[test]
fn prepare_transposes_hwc_samples() {
    // One 3×2 image with 2 channels, stored HWC: value = 10·channel + position.
    let hwc: Vec<u8> = (0..6).flat_map(|pos| [pos as u8, 10 + pos as u8]).collect();
    let d = from_bytes(npy::encode(Dtype::U8, &[1, 3, 2, 2], &hwc), idx_labels(&[0])).unwrap();
    let p = prepare(d, &[2, 3, 2], Some(1.0), &[0.0, 100.0], &[1.0, 2.0]).unwrap();
    let want: Vec<f32> =
        (0..6).map(|pos| pos as f32).chain((0..6).map(|pos| (10.0 + pos as f32 - 100.0) / 2.0)).collect();
    assert_eq!(prepared_sample(&p, 0), want);
    // The domain is laid out as the model's input too: channel 1 has the unit 1/2.
    assert_eq!(p.domain.unit, [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]);
    assert_eq!((p.domain.lo[0], p.domain.lo[6]), (0.0, -50.0));
}

/// Calls `f` on every truncation and on 300 pseudo-random single-byte changes of `bytes`,
/// checking that it returns rather than panics.
fn never_panics(bytes: &[u8], f: impl Fn(Vec<u8>) -> Result<Array, Error>) -> (usize, usize) {
    let (mut ok, mut err) = (0, 0);
    let mut tally = |r: std::thread::Result<Result<Array, Error>>, what: &str| match r {
        Ok(Ok(_)) => ok += 1,
        Ok(Err(_)) => err += 1,
        Err(_) => panic!("panicked on {what}"),
    };
    for cut in 0..bytes.len() {
        tally(catch_unwind(AssertUnwindSafe(|| f(bytes[..cut].to_vec()))), &format!("truncation at {cut}"));
    }
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..300 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let pos = (state % bytes.len() as u64) as usize;
        let xor = ((state >> 32) as u8).max(1);
        let mut b = bytes.to_vec();
        b[pos] ^= xor;
        tally(catch_unwind(AssertUnwindSafe(|| f(b))), &format!("byte {pos} ^= {xor:#x}"));
    }
    (ok, err)
}

#[test]
fn malformed_files_never_panic() {
    let p = Path::new("fuzz.idx.gz");
    let gz = gzip(&idx_images(3, 4, 4));
    let (ok, err) = never_panics(&gz, |b| parse_array(p, maybe_gunzip(p, b, 1 << 20)?));
    assert!(ok >= 1 && err > 100, "ok {ok}, err {err}");

    let raw = idx_images(3, 4, 4);
    let (ok, err) = never_panics(&raw, |b| parse_array(Path::new("fuzz.idx"), b));
    assert!(ok > 10 && err > 10, "ok {ok}, err {err}");

    let p = Path::new("fuzz.npy");
    let np = npy::encode(Dtype::F32, &[2, 3, 3], &f32_le(&[1.0; 18]));
    let (ok, err) = never_panics(&np, |b| parse_array(p, b));
    assert!(ok > 10 && err > 10, "ok {ok}, err {err}");
    // The full pipeline on the arrays that did parse never panics either.
    let labels = parse_array(Path::new("l.npy"), npy::encode(Dtype::U8, &[2], &[0, 1])).unwrap();
    never_panics(&np, |b| {
        let a = parse_array(p, b)?;
        let _ = from_arrays(a.clone(), &labels, "i".into(), "l".into(), Some(1));
        Ok(a)
    });
}

/// The full MNIST test set from the shared data folder, when present.
#[test]
fn shared_mnist_test_set() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/mnist"));
    if !dir.is_dir() {
        eprintln!("skipping: {} is absent", dir.display());
        return;
    }
    let d = load(dir, None, None).unwrap();
    assert_eq!(d.len, 10_000);
    assert_eq!(d.sample_shape, vec![28, 28]);
    assert!(d.images_path.ends_with("t10k-images-idx3-ubyte.gz"));
    assert_eq!(d.labels[0], 7);
    let mut hist = [0usize; 10];
    d.labels.iter().for_each(|&l| hist[l] += 1);
    assert_eq!(hist[..3], [980, 1135, 1032]);
    assert_eq!(hist.iter().sum::<usize>(), 10_000);
    assert!(d.check_labels(10).is_ok());
    let all = d.to_f32();
    assert!(all.iter().all(|&x| (0.0..=255.0).contains(&x) && x.fract() == 0.0));

    // The committed 1,000-image subset is exactly its beginning.
    let sub = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/data/mnist-1k"));
    if sub.is_dir() {
        let s = load(sub, None, None).unwrap();
        assert_eq!(s.len, 1000);
        assert_eq!(s.labels[..], d.labels[..1000]);
        assert_eq!(s.to_f32()[..], all[..1000 * 784]);
    }
    let lim = load(dir, None, Some(10)).unwrap();
    assert_eq!((lim.len, &lim.to_f32()[..]), (10, &all[..7840]));
}

/// The committed 1,000-image MNIST subset.
#[test]
fn committed_mnist_subset() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/data/mnist-1k"));
    let d = load(dir, None, None).unwrap();
    assert_eq!((d.len, d.sample_shape.clone(), d.labels[0]), (1000, vec![28, 28], 7));
    d.check_labels(10).unwrap();
    let p = prepare(d, &[1, 28, 28], None, &[], &[]).unwrap();
    assert!(p.batch(0, 1000).iter().all(|x| (0.0..=1.0).contains(x)));
}
