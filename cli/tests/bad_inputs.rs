//! The README's "Bad input" table, row by row, through the binary: every message in the table
//! is the exact error line of a case here (`…` in the table stands for any text), with exit
//! status 2 and nothing else on stderr but logs. The binary runs in a scratch directory with
//! relative paths, so the table's `m.onnx` is literally the model's path.

use std::path::Path;
use std::process::Command;

use crate::common::root;

/// One bad input: what the README row says, and the arguments that produce it.
struct Case {
    args: &'static [&'static str],
    message: &'static str,
}

/// Every case; the README table must list exactly these messages.
const CASES: &[Case] = &[
    Case {
        args: &["truncated.onnx", "--data", "mnist/t10k-images-idx3-ubyte.gz"],
        message: "certify: error: `truncated.onnx` is not a valid ONNX model: failed to decode Protobuf message: …; \
                  check that the file is complete (not truncated) and is an .onnx protobuf file",
    },
    Case {
        args: &["empty.onnx", "--data", "mnist/t10k-images-idx3-ubyte.gz"],
        message: "certify: error: `empty.onnx` is not a valid ONNX model: the file is empty; check that the file is \
                  complete (not truncated) and is an .onnx protobuf file",
    },
    Case {
        args: &["nograph.onnx", "--data", "mnist/t10k-images-idx3-ubyte.gz"],
        message:
            "certify: error: `nograph.onnx` is not a valid ONNX model: it decodes as protobuf but holds no graph; \
                  check that the file is complete (not truncated) and is an .onnx protobuf file",
    },
    Case {
        args: &["missing.onnx", "--data", "mnist/t10k-images-idx3-ubyte.gz"],
        message: "certify: error: cannot read `missing.onnx`: No such file or directory (os error 2)",
    },
    Case {
        args: &["erf.onnx", "--data", "mnist/t10k-images-idx3-ubyte.gz"],
        message: "certify: error: `erf.onnx`: node `Erf_4`: operator `Erf` is not supported; certify imports Conv \
                  (2-D), MaxPool, … Re-export the model without it (or replace it by supported operators)",
    },
    Case {
        args: &["m.onnx", "--data", "small/t10k-images-idx3-ubyte"],
        message: "certify: error: `small/t10k-images-idx3-ubyte`: samples have shape [20, 20] (400 values) but the \
                  model expects per-sample input [1, 28, 28] (784 values)",
    },
    Case {
        args: &["m.onnx", "--data", "nan/t10k-images-idx3-ubyte"],
        message: "certify: error: `nan/t10k-images-idx3-ubyte`: pixel 17 of image 0 is NaN; every pixel must be a \
                  finite number",
    },
    Case {
        args: &["m.onnx", "--data", "inf/t10k-images-idx3-ubyte"],
        message: "certify: error: `inf/t10k-images-idx3-ubyte`: pixel 3 of image 0 is inf; every pixel must be a \
                  finite number",
    },
    Case {
        args: &["m.onnx", "--data", "empty/t10k-images-idx3-ubyte"],
        message: "certify: error: `empty/t10k-images-idx3-ubyte` holds no images",
    },
    Case {
        args: &["m.onnx", "--data", "label12/t10k-images-idx3-ubyte"],
        message: "certify: error: `m.onnx`: label 12 of image 1 is out of range for a model with 10 classes (labels \
                  in `label12/t10k-labels-idx1-ubyte`); check that the data set matches the model",
    },
    Case {
        args: &["m.onnx", "--data", "neg/x_test.npy"],
        message: "certify: error: `neg/y_test.npy`: label 1 is -3, not a non-negative integer class index",
    },
    Case {
        args: &["m.onnx", "--data", "onehot/x_test.npy"],
        message:
            "certify: error: `onehot/y_test.npy`: labels must be a 1-D array of class indices, one per image, but \
                  the array has shape [1, 10]; one-hot labels? store class indices instead (np.argmax(y, axis=1))",
    },
    Case {
        args: &["m.onnx", "--data", "count/t10k-images-idx3-ubyte"],
        message: "certify: error: `count/t10k-images-idx3-ubyte`: 2 images but 3 labels in \
                  `count/t10k-labels-idx1-ubyte`; pass the matching labels file with --labels PATH",
    },
    Case {
        args: &["m.onnx", "--data", "nolabels/t10k-images-idx3-ubyte"],
        message: "certify: error: labels file not found beside `nolabels/t10k-images-idx3-ubyte`: expected \
                  `t10k-labels-idx1-ubyte[.gz]`; pass --labels PATH",
    },
    Case {
        args: &["m.onnx", "--data", "mnist/t10k-images-idx3-ubyte.gz", "--labels", "nope"],
        message: "certify: error: `nope` does not exist; check the path of the labels file",
    },
    Case {
        args: &["m.onnx", "--data", "truncated/t10k-images-idx3-ubyte"],
        message: "certify: error: `truncated/t10k-images-idx3-ubyte`: the header declares dimensions [2, 28, 28] \
                  (1568 bytes of data) but only 784 bytes follow; the file is truncated, re-download it",
    },
    Case {
        args: &["m.onnx", "--data", "trailing/t10k-images-idx3-ubyte"],
        message: "certify: error: `trailing/t10k-images-idx3-ubyte`: the header declares dimensions [1, 28, 28] (784 \
                  bytes of data) but 785 bytes follow; the file has trailing data or a wrong header",
    },
    Case {
        args: &["m.onnx", "--data", "magic/t10k-images-idx3-ubyte"],
        message: "certify: error: `magic/t10k-images-idx3-ubyte`: IDX magic 0x504b0304 is not an image (0x0803) or \
                  label (0x0801) file; expected an IDX file (raw or gzip, as distributed for MNIST) or a .npy file",
    },
    Case {
        args: &["m.onnx", "--data", "gz/t10k-images-idx3-ubyte.gz"],
        message: "certify: error: `gz/t10k-images-idx3-ubyte.gz`: corrupt or truncated gzip data (incomplete deflate \
                  stream); re-download or re-compress the file",
    },
    Case {
        args: &["m.onnx", "--data", "crc/t10k-images-idx3-ubyte.gz"],
        message: "certify: error: `crc/t10k-images-idx3-ubyte.gz`: corrupt or truncated gzip data (corrupt gzip \
                  stream does not have a matching checksum); re-download or re-compress the file",
    },
    Case {
        args: &["m.onnx", "--data", "complex/x_test.npy"],
        message: "certify: error: `complex/x_test.npy`: element type `<c8` is not supported; convert the array to one \
                  of uint8, int8, int16, int32, int64, float32 or float64 (e.g. `a.astype(np.float32)`)",
    },
    Case {
        args: &["m.onnx", "--data", "fortran/x_test.npy"],
        message: "certify: error: `fortran/x_test.npy`: the array is stored in Fortran order (fortran_order: True); \
                  save it in C order, e.g. `np.save(path, np.ascontiguousarray(a))`",
    },
    Case {
        args: &["m.onnx", "--data", "header/x_test.npy"],
        message: "certify: error: `header/x_test.npy`: not a valid .npy file: header `{garbage header}`: unknown word \
                  `garbage` at byte 1",
    },
    Case {
        args: &["m.onnx", "--data", "/nonexistent"],
        message: "certify: error: `/nonexistent` does not exist; check the path of the data set",
    },
    Case {
        args: &["m.onnx", "--data", "nodata"],
        message:
            "certify: error: `nodata` holds no images/labels pair: looked for …; pass the images file itself (and \
                  --labels PATH)",
    },
    Case {
        args: &["m.onnx", "--data", "mnist/t10k-images-idx3-ubyte.gz", "--batch", "0"],
        message: "certify: error: --batch must be at least 1",
    },
    Case {
        args: &["m.onnx", "--data", "mnist/t10k-images-idx3-ubyte.gz", "--std", "0"],
        message: "certify: error: --std values must be positive and --mean values finite",
    },
    Case {
        args: &["m.onnx", "--data", "mnist/t10k-images-idx3-ubyte.gz", "--std", "1e-40"],
        message: "certify: error: normalising makes element 0 of the samples non-finite (pixels 0.0..255.0 / 255.0, \
                  mean 0.0, std 1e-40); check --scale/--mean/--std",
    },
    Case {
        args: &["m.onnx", "--data", "mnist/t10k-images-idx3-ubyte.gz", "--eps", "-1"],
        message: "certify: error: --eps values must be finite and ≥ 0",
    },
    Case {
        args: &["m.onnx", "--data", "mnist/t10k-images-idx3-ubyte.gz", "--mean", "0.1,0.2"],
        message: "certify: error: 2 per-channel --mean/--std values do not match the first or last axis of the data \
                  shape [28, 28]",
    },
    Case {
        args: &["m.onnx", "--data", "mnist/t10k-images-idx3-ubyte.gz", "--limit", "0"],
        message: "certify: error: a sample limit of 0 selects no images; give a positive limit or none",
    },
    Case {
        args: &["harden", "m.onnx", "--data", "mnist/t10k-images-idx3-ubyte.gz", "--out", "m.onnx"],
        message: "certify: error: --out `m.onnx` is the input model; write the hardened model to another file",
    },
    Case {
        args: &["harden", "sigmoid.onnx", "--data", "mnist/t10k-images-idx3-ubyte.gz", "--out", "o.onnx"],
        message:
            "certify: error: sigmoid.onnx: cannot train this model with a penalty: node `Sigmoid_7` (Sigmoid) has \
                  a non-zero second derivative; the exact Jacobian-penalty gradient needs a piecewise-linear network \
                  (…)",
    },
    Case {
        args: &["harden", "m.onnx", "--data", "label12/t10k-images-idx3-ubyte", "--out", "o.onnx"],
        message: "certify: error: training data for `m.onnx`: the labels do not fit the model: label 12 of image 1 is \
                  out of range for a model with 10 classes (labels in `label12/t10k-labels-idx1-ubyte`); check that \
                  the data set matches the model",
    },
    Case {
        args: &[
            "harden",
            "m.onnx",
            "--data",
            "mnist/t10k-images-idx3-ubyte.gz",
            "--out",
            "o.onnx",
            "--penalty",
            "projections:0",
        ],
        message: "certify: error: --penalty `projections:0`: P must be ≥ 1",
    },
    Case {
        args: &["train", "--arch", "resnet", "--data", "mnist/t10k-images-idx3-ubyte.gz", "--out", "o.onnx"],
        message: "certify: error: node `resnet`: invalid parameter: unknown architecture; expected `paper-mnist` (…), \
                  `mlp:IN-H1-…-K` (…) or `conv-small` (…)",
    },
];

/// Whether `text` matches `pattern`, where `…` stands for any text.
fn matches(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('…').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return text == pattern;
    }
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

fn idx(ty: u8, dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, ty, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(payload);
    b
}

fn npy(descr: &str, shape: &[usize], fortran: bool, payload: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_txt = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let order = if fortran { "True" } else { "False" };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape_txt}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(header.len() as u16).to_le_bytes());
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(payload);
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

/// Writes every file the cases use into `dir`.
fn fixtures(dir: &Path) {
    let put = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
        std::fs::write(p, bytes).expect("write");
    };
    let model = std::fs::read(root().join("examples/models/mnist-convnet-maxpool.onnx")).expect("example model");
    put("m.onnx", &model);
    put("truncated.onnx", &model[..model.len() / 3]);
    put("empty.onnx", b"");
    put("nograph.onnx", &[0x08, 0x07]); // ir_version 7 and nothing else
    put("erf.onnx", &std::fs::read(root().join("onnx/testdata/unsupported-erf.onnx")).expect("fixture"));
    put("sigmoid.onnx", &std::fs::read(root().join("onnx/testdata/nhwc-mlp.onnx")).expect("fixture"));
    let mnist = root().join("examples/data/mnist-1k");
    for f in ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] {
        put(&format!("mnist/{f}"), &std::fs::read(mnist.join(f)).expect("shipped data"));
    }
    let pair = |sub: &str, images: Vec<u8>, labels: Option<Vec<u8>>| {
        put(&format!("{sub}/t10k-images-idx3-ubyte"), &images);
        if let Some(l) = labels {
            put(&format!("{sub}/t10k-labels-idx1-ubyte"), &l);
        }
    };
    pair("small", idx(0x08, &[1, 20, 20], &[0; 400]), Some(idx(0x08, &[1], &[1])));
    let floats = |bad: usize, v: f32| -> Vec<u8> {
        (0..784).flat_map(|i| (if i == bad { v } else { 0.5f32 }).to_be_bytes()).collect()
    };
    pair("nan", idx(0x0D, &[1, 28, 28], &floats(17, f32::NAN)), Some(idx(0x08, &[1], &[1])));
    pair("inf", idx(0x0D, &[1, 28, 28], &floats(3, f32::INFINITY)), Some(idx(0x08, &[1], &[1])));
    pair("empty", idx(0x08, &[0, 28, 28], &[]), Some(idx(0x08, &[0], &[])));
    pair("label12", idx(0x08, &[2, 28, 28], &[0; 2 * 784]), Some(idx(0x08, &[2], &[3, 12])));
    pair("count", idx(0x08, &[2, 28, 28], &[0; 2 * 784]), Some(idx(0x08, &[3], &[0; 3])));
    pair("nolabels", idx(0x08, &[1, 28, 28], &[0; 784]), None);
    pair("truncated", idx(0x08, &[2, 28, 28], &[0; 784]), Some(idx(0x08, &[2], &[0; 2])));
    pair("trailing", idx(0x08, &[1, 28, 28], &[0; 785]), Some(idx(0x08, &[1], &[0])));
    let mut zip = b"PK\x03\x04".to_vec();
    zip.extend([0; 100]);
    pair("magic", zip, Some(idx(0x08, &[1], &[0])));
    let z = gzip(&idx(0x08, &[2, 28, 28], &[0; 2 * 784]));
    let gz_labels = gzip(&idx(0x08, &[2], &[0; 2]));
    put("gz/t10k-images-idx3-ubyte.gz", &z[..z.len() / 2]);
    put("gz/t10k-labels-idx1-ubyte.gz", &gz_labels);
    let mut crc = z.clone();
    let n = crc.len();
    crc[n - 8] ^= 0xff;
    put("crc/t10k-images-idx3-ubyte.gz", &crc);
    put("crc/t10k-labels-idx1-ubyte.gz", &gz_labels);
    let labels1 = npy("<i8", &[1], false, &[0; 8]);
    put("neg/x_test.npy", &npy("|u1", &[2, 28, 28], false, &[0; 2 * 784]));
    let neg: Vec<u8> = [1i64, -3].iter().flat_map(|v| v.to_le_bytes()).collect();
    put("neg/y_test.npy", &npy("<i8", &[2], false, &neg));
    put("onehot/x_test.npy", &npy("|u1", &[1, 28, 28], false, &[0; 784]));
    put("onehot/y_test.npy", &npy("<f4", &[1, 10], false, &[0; 40]));
    put("complex/x_test.npy", &npy("<c8", &[1, 28, 28], false, &[0; 8 * 784]));
    put("complex/y_test.npy", &labels1);
    put("fortran/x_test.npy", &npy("|u1", &[1, 28, 28], true, &[0; 784]));
    put("fortran/y_test.npy", &labels1);
    put("header/x_test.npy", b"\x93NUMPY\x01\x00\x10\x00{garbage header}");
    put("header/y_test.npy", &labels1);
    std::fs::create_dir_all(dir.join("nodata")).expect("dir");
}

/// The messages of the README's "Bad input" table (its double-backtick code spans).
fn readme_messages() -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let start = readme.find("\n## Bad input").expect("a Bad input section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    section
        .lines()
        .filter(|l| l.starts_with('|'))
        .flat_map(|l| l.split("``").skip(1).step_by(2).map(|s| s.trim().to_string()).collect::<Vec<_>>())
        .collect()
}

/// Rows of the table tested in `harden.rs`, which needs a training run to produce them.
const TESTED_IN_HARDEN: [&str; 2] = [
    "certify: error: training step 2: the logits went non-finite",
    "certify: error: the checkpoint in `ck` was made with other settings",
];

#[test]
fn every_bad_input_row_of_the_readme_gives_its_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    fixtures(dir.path());
    let mut failures = Vec::new();
    for case in CASES {
        let out = Command::new(env!("CARGO_BIN_EXE_certify"))
            .args(case.args)
            .arg("-q")
            .current_dir(dir.path())
            .output()
            .expect("the certify binary runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("certify: error:")).collect();
        let ok = out.status.code() == Some(2) && errors.len() == 1 && matches(case.message, errors[0]);
        if !ok || stderr.contains("panicked") {
            failures.push(format!(
                "{:?}: exit {:?}, stderr:\n{stderr}\nexpected: {}",
                case.args,
                out.status.code(),
                case.message
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), CASES.len(), failures.join("\n"));
    // The README lists exactly these messages.
    let readme = readme_messages();
    for case in CASES {
        assert!(readme.iter().any(|m| m == case.message), "README's Bad input table lacks\n{}", case.message);
    }
    for m in &readme {
        let tested = CASES.iter().any(|c| c.message == m) || TESTED_IN_HARDEN.iter().any(|t| m.starts_with(t));
        assert!(tested, "README message not tested: {m}");
    }
}

#[test]
fn the_wildcard_matcher() {
    assert!(matches("a…c", "abbbc") && matches("a…c", "ac") && matches("abc", "abc"));
    assert!(matches("a…b…c", "a1b2c") && !matches("a…b…c", "a1c") && !matches("a…c", "abd"));
    assert!(!matches("abc", "abcd") && !matches("ab…", "a"));
}
