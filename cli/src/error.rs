//! The error type of the `certify-cli` library.
//!
//! Every message names the file (or value) at fault, says what is wrong with it, and where
//! possible what to do next.

use std::path::PathBuf;

/// Everything the library part of the command-line tool can report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ---------------------------------------------------------------- data sets
    /// A data file or directory does not exist.
    #[error("`{}` does not exist; check the path of the {what}", .path.display())]
    NotFound {
        /// The missing path.
        path: PathBuf,
        /// What it should have been ("data set", "labels file").
        what: &'static str,
    },
    /// A file could not be read.
    #[error("cannot read `{}`: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating-system error.
        #[source]
        source: std::io::Error,
    },
    /// A gzip file is corrupt or truncated.
    #[error("`{}`: corrupt or truncated gzip data ({source}); re-download or re-compress the file", .path.display())]
    Gzip {
        /// The file.
        path: PathBuf,
        /// What the decompressor reported.
        #[source]
        source: std::io::Error,
    },
    /// A gzip file decompresses to more than the tool is willing to hold in memory.
    #[error("`{}` decompresses to more than {limit} bytes; this is not a data set that fits in memory", .path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
    /// The first bytes of an IDX file are not a valid magic number.
    #[error(
        "`{}`: IDX magic 0x{magic:08x} is not an image (0x0803) or label (0x0801) file; expected an IDX file \
         (raw or gzip, as distributed for MNIST) or a .npy file",
        .path.display()
    )]
    IdxMagic {
        /// The file.
        path: PathBuf,
        /// The first four bytes, big-endian.
        magic: u32,
    },
    /// An IDX file is malformed beyond its magic number.
    #[error("`{}`: not a valid IDX file: {reason}", .path.display())]
    Idx {
        /// The file.
        path: PathBuf,
        /// What is wrong, in words.
        reason: String,
    },
    /// A .npy file is malformed (bad magic, version, header, …).
    #[error("`{}`: not a valid .npy file: {reason}", .path.display())]
    Npy {
        /// The file.
        path: PathBuf,
        /// What is wrong, in words.
        reason: String,
    },
    /// A .npy file is stored in Fortran (column-major) order.
    #[error(
        "`{}`: the array is stored in Fortran order (fortran_order: True); save it in C order, e.g. \
         `np.save(path, np.ascontiguousarray(a))`",
        .path.display()
    )]
    FortranOrder {
        /// The file.
        path: PathBuf,
    },
    /// A .npy element type that cannot be read.
    #[error(
        "`{}`: element type `{dtype}` is not supported; convert the array to one of uint8, int8, int16, int32, \
         int64, float32 or float64 (e.g. `a.astype(np.float32)`)",
        .path.display()
    )]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The dtype as the file spells it.
        dtype: String,
    },
    /// The header's dimensions do not fit in memory arithmetic (overflowing products).
    #[error("`{}`: dimensions {dims:?} are too large (their product overflows); the header is corrupt", .path.display())]
    DimsOverflow {
        /// The file.
        path: PathBuf,
        /// The declared dimensions.
        dims: Vec<u64>,
    },
    /// The payload is shorter than the header declares.
    #[error(
        "`{}`: the header declares dimensions {dims:?} ({expected} bytes of data) but only {got} bytes follow; \
         the file is truncated, re-download it",
        .path.display()
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The declared dimensions.
        dims: Vec<u64>,
        /// Payload bytes the header implies.
        expected: u64,
        /// Payload bytes present.
        got: u64,
    },
    /// The payload is longer than the header declares.
    #[error(
        "`{}`: the header declares dimensions {dims:?} ({expected} bytes of data) but {got} bytes follow; \
         the file has trailing data or a wrong header",
        .path.display()
    )]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// The declared dimensions.
        dims: Vec<u64>,
        /// Payload bytes the header implies.
        expected: u64,
        /// Payload bytes present.
        got: u64,
    },
    /// An array has the wrong number of dimensions for its role.
    #[error("`{}`: {role} must be {expected}, but the array has shape {shape:?}{hint}", .path.display())]
    Rank {
        /// The file.
        path: PathBuf,
        /// "images" or "labels".
        role: &'static str,
        /// The expected layout, in words.
        expected: &'static str,
        /// The array's shape.
        shape: Vec<usize>,
        /// Extra advice (may be empty).
        hint: &'static str,
    },
    /// Neither IDX nor .npy.
    #[error("`{}` is neither an IDX file (raw or gzip) nor a .npy file", .path.display())]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// No labels file could be found next to the images file.
    #[error("labels file not found beside `{}`: {}; pass --labels PATH", .images.display(), expected_list(.expected))]
    LabelsNotFound {
        /// The images file.
        images: PathBuf,
        /// The file names that were looked for (empty: the name follows no known convention).
        expected: Vec<String>,
    },
    /// A directory holds no images/labels pair.
    #[error(
        "`{}` holds no images/labels pair: looked for {}; pass the images file itself (and --labels PATH)",
        .dir.display(),
        .looked_for.join(", ")
    )]
    NoDataset {
        /// The directory.
        dir: PathBuf,
        /// The naming conventions that were tried.
        looked_for: Vec<String>,
    },
    /// Images and labels disagree on the number of samples.
    #[error(
        "`{}`: {images} images but {labels} labels in `{}`; pass the matching labels file with --labels PATH",
        .images_path.display(),
        .labels_path.display()
    )]
    CountMismatch {
        /// The images file.
        images_path: PathBuf,
        /// The labels file.
        labels_path: PathBuf,
        /// Number of images.
        images: usize,
        /// Number of labels.
        labels: usize,
    },
    /// The images file holds no samples.
    #[error("`{}` holds no images", .path.display())]
    Empty {
        /// The images file.
        path: PathBuf,
    },
    /// A sample limit of zero was asked for.
    #[error("a sample limit of 0 selects no images; give a positive limit or none")]
    ZeroLimit,
    /// A pixel is NaN or infinite (or too large for `f32`).
    #[error("`{}`: pixel {pixel} of image {image} is {value}; every pixel must be a finite number", .path.display())]
    NonFinitePixel {
        /// The images file.
        path: PathBuf,
        /// Sample index.
        image: usize,
        /// Flat index of the pixel within the sample.
        pixel: usize,
        /// The offending value.
        value: f64,
    },
    /// A label is not a non-negative integer.
    #[error("`{}`: label {index} is {value}, not a non-negative integer class index", .path.display())]
    BadLabel {
        /// The labels file.
        path: PathBuf,
        /// Sample index.
        index: usize,
        /// The offending value, as text.
        value: String,
    },
    /// A label is not a valid class of the model.
    #[error(
        "label {label} of image {index} is out of range for a model with {num_classes} classes (labels in `{}`); \
         check that the data set matches the model",
        .path.display()
    )]
    LabelOutOfRange {
        /// The labels file.
        path: PathBuf,
        /// Sample index.
        index: usize,
        /// The label.
        label: usize,
        /// Classes the model has.
        num_classes: usize,
    },
    /// Scaling or normalisation options that do not fit the data (the message names the option).
    #[error("{reason}")]
    Preprocess {
        /// What is wrong, in words.
        reason: String,
    },
    /// Samples whose shape does not fit the model's input.
    #[error(
        "`{}`: samples have shape {shape:?} ({values} values) but the model expects per-sample input \
         {model_shape:?} ({model_values} values)",
        .path.display()
    )]
    SampleShape {
        /// The images file.
        path: PathBuf,
        /// The data's sample shape.
        shape: Vec<usize>,
        /// Values per data sample.
        values: usize,
        /// The model's per-sample input shape.
        model_shape: Vec<usize>,
        /// Values per model input.
        model_values: usize,
    },
}

fn expected_list(names: &[String]) -> String {
    if names.is_empty() {
        "its name does not follow a known convention (`X-images-idx3-ubyte[.gz]` ↔ `X-labels-idx1-ubyte[.gz]`, \
         `images.npy` ↔ `labels.npy`, `x.npy` ↔ `y.npy`, `<stem>_images.npy` ↔ `<stem>_labels.npy`)"
            .to_string()
    } else {
        let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
        format!("expected {}", quoted.join(" or "))
    }
}
