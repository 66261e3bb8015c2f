//! Data sets to certify: images with integer class labels, read from IDX files (the MNIST
//! format, raw or gzip-compressed) or from NumPy `.npy` files.
//!
//! [`resolve`] turns what the user typed (an images file, or a directory) into an images file and
//! a labels file; [`load`] reads and validates both into a [`Dataset`], which keeps the pixels as
//! stored (a `u8` file stays one byte per pixel); [`prepare`] wraps it with the scaling,
//! normalisation and layout a model expects and converts samples to `f32` on demand, one batch at
//! a time, so the data never exists as a whole in `f32`.
//!
//! Every reader is defensive: sizes declared by a header are checked (without overflow) against
//! the bytes actually present before anything is allocated from them, gzip output is capped at
//! [`MAX_DECOMPRESSED`] bytes, and malformed input gives an [`Error`], never a panic.

pub mod idx;
pub mod npy;
mod prepare;

pub use prepare::{prepare, Prepared};

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// The largest decompressed size accepted from a gzip file (4 GiB).
pub const MAX_DECOMPRESSED: u64 = 4 << 30;

/// The element type of an array stored in a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// `u8` (IDX `0x08`, npy `u1`).
    U8,
    /// `i8` (IDX `0x09`, npy `i1`).
    I8,
    /// `i16` (IDX `0x0B`, npy `i2`).
    I16,
    /// `u16` (npy `u2`).
    U16,
    /// `i32` (IDX `0x0C`, npy `i4`).
    I32,
    /// `u32` (npy `u4`).
    U32,
    /// `i64` (npy `i8`).
    I64,
    /// `u64` (npy `u8`).
    U64,
    /// `f32` (IDX `0x0D`, npy `f4`).
    F32,
    /// `f64` (IDX `0x0E`, npy `f8`).
    F64,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::U8 | Dtype::I8 => 1,
            Dtype::I16 | Dtype::U16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::I64 | Dtype::U64 | Dtype::F64 => 8,
        }
    }

    /// Whether the type holds integers.
    pub fn is_integer(self) -> bool {
        !matches!(self, Dtype::F32 | Dtype::F64)
    }
}

/// An n-dimensional array as stored in a file: element type, byte order, shape and the raw
/// bytes of its payload (row-major). Its payload length always matches its shape.
#[derive(Clone, Debug)]
pub struct Array {
    /// Element type.
    pub dtype: Dtype,
    /// Whether multi-byte elements are big-endian.
    pub big_endian: bool,
    /// Shape, outermost axis first.
    pub shape: Vec<usize>,
    bytes: Vec<u8>,
    offset: usize,
}

impl Array {
    /// Wraps the bytes of a file whose payload starts at `offset`, checking that the payload
    /// holds exactly the elements `dims` declares.
    pub(crate) fn new(
        path: &Path,
        dtype: Dtype,
        big_endian: bool,
        dims: Vec<u64>,
        bytes: Vec<u8>,
        offset: usize,
    ) -> Result<Self, Error> {
        let overflow = || Error::DimsOverflow { path: path.to_path_buf(), dims: dims.clone() };
        let expected = dims
            .iter()
            .try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d))
            .filter(|&b| usize::try_from(b).is_ok())
            .ok_or_else(overflow)?;
        let got = bytes.len().saturating_sub(offset) as u64;
        if got < expected {
            return Err(Error::Truncated { path: path.to_path_buf(), dims, expected, got });
        }
        if got > expected {
            return Err(Error::TrailingBytes { path: path.to_path_buf(), dims, expected, got });
        }
        // The product fits in usize, so every factor does.
        let shape = dims.iter().map(|&d| usize::try_from(d).map_err(|_| overflow())).collect::<Result<_, _>>()?;
        Ok(Array { dtype, big_endian, shape, bytes, offset })
    }

    /// The raw payload bytes.
    pub fn payload(&self) -> &[u8] {
        &self.bytes[self.offset..]
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.payload().len() / self.dtype.size()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the first `rows` entries of the outermost axis (no-op when there are fewer) and
    /// gives the memory of the rest back.
    pub(crate) fn truncate_rows(&mut self, rows: usize) {
        let Some(&n) = self.shape.first() else { return };
        if rows >= n {
            return;
        }
        let row_bytes = self.shape[1..].iter().product::<usize>() * self.dtype.size();
        self.bytes.truncate(self.offset + rows * row_bytes);
        self.bytes.shrink_to_fit();
        self.shape[0] = rows;
    }

    /// Calls `f` with elements `start..start + count` converted to `f64` (exact for every
    /// type, except 64-bit integers beyond 2^53). The range must be inside the array.
    pub fn visit(&self, start: usize, count: usize, mut f: impl FnMut(f64)) {
        let size = self.dtype.size();
        let Some(bytes) =
            self.payload().get(start.saturating_mul(size)..(start.saturating_add(count)).saturating_mul(size))
        else {
            return;
        };
        let be = self.big_endian;
        macro_rules! each {
            ($t:ty) => {
                for c in bytes.chunks_exact(std::mem::size_of::<$t>()) {
                    let mut a = [0u8; std::mem::size_of::<$t>()];
                    a.copy_from_slice(c);
                    f((if be { <$t>::from_be_bytes(a) } else { <$t>::from_le_bytes(a) }) as f64)
                }
            };
        }
        match self.dtype {
            Dtype::U8 => bytes.iter().for_each(|&b| f(b as f64)),
            Dtype::I8 => bytes.iter().for_each(|&b| f(b as i8 as f64)),
            Dtype::I16 => each!(i16),
            Dtype::U16 => each!(u16),
            Dtype::I32 => each!(i32),
            Dtype::U32 => each!(u32),
            Dtype::I64 => each!(i64),
            Dtype::U64 => each!(u64),
            Dtype::F32 => each!(f32),
            Dtype::F64 => each!(f64),
        }
    }
}

/// Reads a file, transparently decompressing gzip (recognised by its magic bytes `1f 8b`, not by
/// the extension), with output capped at [`MAX_DECOMPRESSED`] bytes.
pub fn read_file(path: &Path) -> Result<Vec<u8>, Error> {
    let bytes = std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound { path: path.to_path_buf(), what: "data file" },
        _ => Error::Io { path: path.to_path_buf(), source },
    })?;
    maybe_gunzip(path, bytes, MAX_DECOMPRESSED)
}

/// Decompresses `bytes` when they start with the gzip magic; errors when the output would
/// exceed `limit` bytes.
pub(crate) fn maybe_gunzip(path: &Path, bytes: Vec<u8>, limit: u64) -> Result<Vec<u8>, Error> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes);
    }
    // The trailer's size field (the last member's size mod 2³²) sizes the output, so that it is
    // not grown by doubling (each doubling copies and briefly holds twice the data); capped by
    // deflate's largest ratio (1032:1), so a corrupt trailer cannot ask for more.
    let trailer = bytes
        .len()
        .checked_sub(4)
        .map_or(0, |at| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as u64);
    let hint = trailer.min(limit).min(bytes.len() as u64 * 1032);
    let mut out = Vec::with_capacity(usize::try_from(hint).unwrap_or(0));
    let mut decoder = flate2::read::MultiGzDecoder::new(bytes.as_slice()).take(limit.saturating_add(1));
    decoder.read_to_end(&mut out).map_err(|source| Error::Gzip { path: path.to_path_buf(), source })?;
    if out.len() as u64 > limit {
        return Err(Error::TooLarge { path: path.to_path_buf(), limit });
    }
    Ok(out)
}

/// Reads an IDX or .npy file (either possibly gzip-compressed) into an [`Array`]. The format is
/// recognised by content (see [`parse_array`]).
pub fn read_array(path: &Path) -> Result<Array, Error> {
    parse_array(path, read_file(path)?)
}

/// Decodes the bytes of a data file exactly as [`read_array`] decodes the file's contents:
/// gzip when the bytes start with its magic (output capped at [`MAX_DECOMPRESSED`]), then IDX or
/// .npy (see [`parse_array`]). `path` only names the file in errors and, for content that is
/// neither, decides which format's error to report. For fuzzing and tools.
pub fn parse_file_bytes(path: &Path, bytes: Vec<u8>) -> Result<Array, Error> {
    parse_array(path, maybe_gunzip(path, bytes, MAX_DECOMPRESSED)?)
}

/// Parses the (already decompressed) bytes of an IDX or .npy file: the npy magic `\x93NUMPY`
/// means npy and two zero bytes mean IDX, whatever the name says; otherwise a `.npy` name
/// decides which format's error to report.
pub fn parse_array(path: &Path, bytes: Vec<u8>) -> Result<Array, Error> {
    let name = file_name(path);
    let npy_name = name.ends_with(".npy") || name.ends_with(".npy.gz");
    if bytes.starts_with(npy::MAGIC) || (npy_name && !bytes.starts_with(&[0, 0])) {
        npy::parse(path, bytes)
    } else {
        idx::parse(path, bytes)
    }
}

/// Images and labels, validated: as many labels as images, at least one sample, labels that are
/// non-negative integers, finite pixels. The pixels stay in the file's element type (see
/// [`prepare`] for model-ready `f32` batches).
#[derive(Clone, Debug)]
pub struct Dataset {
    /// The pixels, `[len, sample_shape…]`, as stored.
    pixels: Array,
    /// One class index per sample.
    pub labels: Vec<usize>,
    /// Number of samples.
    pub len: usize,
    /// The shape of one sample (`[28, 28]` for MNIST IDX, whatever the file says otherwise).
    pub sample_shape: Vec<usize>,
    /// Whether the pixels were stored as integers (then [`prepare`] scales them, by default by
    /// 1/255).
    pub integer_pixels: bool,
    /// The images file.
    pub images_path: PathBuf,
    /// The labels file.
    pub labels_path: PathBuf,
}

impl Dataset {
    /// Values per sample.
    pub fn sample_len(&self) -> usize {
        self.sample_shape.iter().product()
    }

    /// Calls `f` with the stored values of samples `start..start + count`, in order, as `f32`
    /// (no scaling). Does nothing when the range is not inside the data set.
    pub fn visit_samples(&self, start: usize, count: usize, mut f: impl FnMut(f32)) {
        let d = self.sample_len();
        if start.checked_add(count).is_some_and(|end| end <= self.len) {
            self.pixels.visit(start * d, count * d, |v| f(v as f32));
        }
    }

    /// Writes the stored values of sample `i` into `out` (`sample_len()` values; no scaling).
    ///
    /// # Panics
    /// When `i >= len` or `out` has another length.
    pub fn sample_into(&self, i: usize, out: &mut [f32]) {
        assert!(i < self.len && out.len() == self.sample_len(), "sample {i} of {} into {} values", self.len, out.len());
        let mut j = 0;
        self.visit_samples(i, 1, |v| {
            out[j] = v;
            j += 1;
        });
    }

    /// Every stored value as `f32`, `[len, sample_len()]` (no scaling): four bytes per value,
    /// for tools that want the whole set at once.
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.len * self.sample_len());
        self.visit_samples(0, self.len, |v| out.push(v));
        out
    }

    /// Checks that every label is a class of a model with `num_classes` logits.
    pub fn check_labels(&self, num_classes: usize) -> Result<(), Error> {
        match self.labels.iter().position(|&l| l >= num_classes) {
            None => Ok(()),
            Some(index) => Err(Error::LabelOutOfRange {
                path: self.labels_path.clone(),
                index,
                label: self.labels[index],
                num_classes,
            }),
        }
    }
}

/// Finds the images and labels files: `data` is an images file (IDX raw or `.gz`, or `.npy`)
/// whose labels file lies beside it under the matching conventional name, or a directory
/// holding such a pair (the test split is preferred when there are several). An explicit
/// `labels` path always wins.
///
/// Naming conventions: `X-images-idx3-ubyte[.gz]` ↔ `X-labels-idx1-ubyte[.gz]` (also
/// `X-images.idx3-ubyte` ↔ `X-labels.idx1-ubyte`), `images.npy` ↔ `labels.npy`, `x.npy`/`X.npy`
/// ↔ `y.npy`, `x_S.npy` ↔ `y_S.npy`, and generally `…images….npy` ↔ `…labels….npy`.
pub fn resolve(data: &Path, labels: Option<&Path>) -> Result<(PathBuf, PathBuf), Error> {
    if let Some(l) = labels {
        if !l.is_file() {
            return Err(Error::NotFound { path: l.to_path_buf(), what: "labels file" });
        }
    }
    if data.is_dir() {
        return resolve_dir(data, labels);
    }
    if !data.exists() {
        return Err(Error::NotFound { path: data.to_path_buf(), what: "data set" });
    }
    if let Some(l) = labels {
        return Ok((data.to_path_buf(), l.to_path_buf()));
    }
    let dir = data.parent().unwrap_or(Path::new(""));
    let candidates = label_candidates(&file_name(data));
    match candidates.names.iter().map(|n| dir.join(n)).find(|p| p.is_file()) {
        Some(l) => Ok((data.to_path_buf(), l)),
        None => Err(Error::LabelsNotFound { images: data.to_path_buf(), expected: candidates.shown }),
    }
}

fn resolve_dir(dir: &Path, labels: Option<&Path>) -> Result<(PathBuf, PathBuf), Error> {
    let looked_for = || {
        [
            "X-images-idx3-ubyte[.gz] + X-labels-idx1-ubyte[.gz]",
            "X-images.idx3-ubyte + X-labels.idx1-ubyte",
            "images.npy + labels.npy",
            "x.npy + y.npy",
            "x_test.npy + y_test.npy",
            "S_images.npy + S_labels.npy",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    // (images, labels) pairs; with an explicit labels file every images-like file qualifies.
    let mut pairs: Vec<(String, PathBuf)> = Vec::new();
    for name in &names {
        let candidates = label_candidates(name);
        if candidates.names.is_empty() {
            continue;
        }
        let partner = match labels {
            Some(l) => Some(l.to_path_buf()),
            None => candidates.names.iter().map(|n| dir.join(n)).find(|p| p.is_file()),
        };
        if let Some(p) = partner {
            pairs.push((name.clone(), p));
        }
    }
    let is_test = |n: &str| {
        let l = n.to_ascii_lowercase();
        l.contains("t10k") || l.contains("test")
    };
    let chosen = pairs.iter().position(|(n, _)| is_test(n)).or(if pairs.is_empty() { None } else { Some(0) });
    let Some(i) = chosen else {
        return Err(Error::NoDataset { dir: dir.to_path_buf(), looked_for: looked_for() });
    };
    if pairs.len() > 1 {
        let all: Vec<&str> = pairs.iter().map(|(n, _)| n.as_str()).collect();
        log::info!(
            "`{}` holds several data sets ({}); using `{}` (pass the images file itself to choose another)",
            dir.display(),
            all.join(", "),
            pairs[i].0
        );
    }
    let (name, l) = pairs.swap_remove(i);
    Ok((dir.join(name), l))
}

/// Labels file names that pair with an images file name, in order of preference, and how to
/// show them in an error.
struct Candidates {
    names: Vec<String>,
    shown: Vec<String>,
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Replaces the last `images` in `s` by `labels`.
fn images_to_labels(s: &str) -> Option<String> {
    let pos = s.rfind("images")?;
    Some(format!("{}labels{}", &s[..pos], &s[pos + "images".len()..]))
}

fn label_candidates(images_name: &str) -> Candidates {
    let none = Candidates { names: Vec::new(), shown: Vec::new() };
    // The gzip suffix is optional on both sides; prefer the one the images file uses.
    let (base, gz) = match images_name.strip_suffix(".gz") {
        Some(b) => (b, true),
        None => (images_name, false),
    };
    let with_gz = |stems: Vec<String>| {
        let mut names = Vec::new();
        for s in &stems {
            let plain = s.clone();
            let zipped = format!("{s}.gz");
            if gz {
                names.extend([zipped, plain]);
            } else {
                names.extend([plain, zipped]);
            }
        }
        names
    };
    if let Some(stem) = base.strip_suffix(".npy") {
        let stems: Vec<String> = if stem == "x" || stem == "X" {
            vec!["y".into(), "Y".into()]
        } else if let Some(rest) = stem.strip_prefix("x_").or_else(|| stem.strip_prefix("X_")) {
            vec![format!("y_{rest}"), format!("Y_{rest}")]
        } else if let Some(l) = images_to_labels(stem) {
            vec![l]
        } else {
            return none;
        };
        let shown = stems.iter().map(|s| format!("{s}.npy")).collect();
        let names = with_gz(stems.iter().map(|s| format!("{s}.npy")).collect());
        return Candidates { names, shown };
    }
    // IDX: `X-images-idx3-ubyte` ↔ `X-labels-idx1-ubyte` (or `.idx3` ↔ `.idx1`).
    let Some(pos) = base.rfind("images") else { return none };
    let Some(l) = images_to_labels(base) else { return none };
    let after = pos + "labels".len();
    let tail = &l[after..];
    let Some(k) = tail.find("idx") else { return none };
    let mut label = l.clone();
    let digit = after + k + 3;
    if l.as_bytes().get(digit).is_some_and(|b| b.is_ascii_digit()) {
        label.replace_range(digit..digit + 1, "1");
    }
    Candidates { shown: vec![format!("{label}[.gz]")], names: with_gz(vec![label]) }
}

/// Reads the images and labels (see [`resolve`]) and validates them: equal counts, at least one
/// sample, labels that are non-negative integers, finite pixels. With `limit`, only the first
/// `limit` samples are checked and kept.
pub fn load(data: &Path, labels: Option<&Path>, limit: Option<usize>) -> Result<Dataset, Error> {
    if limit == Some(0) {
        return Err(Error::ZeroLimit);
    }
    let (images_path, labels_path) = resolve(data, labels)?;
    let images = read_array(&images_path)?;
    let labels = read_array(&labels_path)?;
    from_arrays(images, &labels, images_path, labels_path, limit)
}

/// Builds a data set from arrays already read (see [`load`]); the images array becomes the data
/// set's storage (cut to `limit` samples).
pub fn from_arrays(
    mut images: Array,
    labels: &Array,
    images_path: PathBuf,
    labels_path: PathBuf,
    limit: Option<usize>,
) -> Result<Dataset, Error> {
    if limit == Some(0) {
        return Err(Error::ZeroLimit);
    }
    let shape = &images.shape;
    if shape.len() < 2 || shape[1..].contains(&0) {
        return Err(Error::Rank {
            path: images_path,
            role: "images",
            expected: "an array of at least 2 dimensions (the count, then the sample shape such as 28×28) \
                       with no empty sample axis",
            shape: shape.clone(),
            hint: if shape.len() == 1 { "; is this a labels file?" } else { "" },
        });
    }
    let lshape = &labels.shape;
    if lshape.is_empty() || lshape[1..].iter().any(|&d| d != 1) {
        let one_hot = lshape.len() == 2 && lshape[1] > 1;
        return Err(Error::Rank {
            path: labels_path,
            role: "labels",
            expected: "a 1-D array of class indices, one per image",
            shape: lshape.clone(),
            hint: if one_hot { "; one-hot labels? store class indices instead (np.argmax(y, axis=1))" } else { "" },
        });
    }
    let (n_images, n_labels) = (shape[0], lshape[0]);
    if n_images != n_labels {
        return Err(Error::CountMismatch { images_path, labels_path, images: n_images, labels: n_labels });
    }
    if n_images == 0 {
        return Err(Error::Empty { path: images_path });
    }
    let n = limit.map_or(n_images, |l| l.min(n_images));
    let sample_shape = shape[1..].to_vec();
    let d: usize = sample_shape.iter().product();

    let mut seen = 0usize;
    let mut bad: Option<(usize, f64)> = None;
    images.visit(0, n * d, |v| {
        if bad.is_none() && !(v as f32).is_finite() {
            bad = Some((seen, v));
        }
        seen += 1;
    });
    if let Some((i, value)) = bad {
        return Err(Error::NonFinitePixel { path: images_path, image: i / d, pixel: i % d, value });
    }

    let mut classes = Vec::with_capacity(n);
    let mut bad_label: Option<(usize, f64)> = None;
    labels.visit(0, n, |v| {
        // Exact integers up to 2^53; anything else is not a class index.
        let ok = v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= 9_007_199_254_740_992.0;
        if ok {
            classes.push(v as usize);
        } else {
            bad_label.get_or_insert((classes.len(), v));
            classes.push(0);
        }
    });
    if let Some((index, value)) = bad_label {
        return Err(Error::BadLabel { path: labels_path, index, value: format!("{value}") });
    }

    images.truncate_rows(n);
    Ok(Dataset {
        integer_pixels: images.dtype.is_integer(),
        pixels: images,
        labels: classes,
        len: n,
        sample_shape,
        images_path,
        labels_path,
    })
}

#[cfg(test)]
mod tests;
