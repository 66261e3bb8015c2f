//! Property tests of the passes, one module per layer kind (so a failure names the kind) plus
//! random networks mixing every kind. Each module checks, in f64:
//! - `jacobian_matches_fd`: the exact Jacobian equals central finite differences of `forward`;
//! - `jvp_vjp_adjoint`: `uᵀ(Jv) = (uᵀJ)v`, and both agree with the full Jacobian;
//! - `batch_matches_single`: a batch of 3 gives the per-sample results of batch 1;
//! - `f32_matches_f64`: the `f32` cast computes the same logits within 1e-4 relative.

use proptest::prelude::*;

use crate::checks;
use crate::strategies::{build, config, inputs, kind_case, random_case, Kind};

/// Samples per batch in the batched properties.
const BATCH: usize = 3;

macro_rules! properties {
    ($($module:ident => $case:expr;)*) => {$(
        mod $module {
            use super::*;

            proptest! {
                #![proptest_config(config())]

                #[test]
                fn jacobian_matches_fd(case in $case) {
                    let net = build(&case);
                    checks::jacobian_matches_fd(&net, &inputs(&case, &net, 1))?;
                }

                #[test]
                fn jvp_vjp_adjoint(case in $case) {
                    let net = build(&case);
                    checks::jvp_vjp_adjoint(&net, &inputs(&case, &net, BATCH), BATCH, case.seed)?;
                }

                #[test]
                fn batch_matches_single(case in $case) {
                    let net = build(&case);
                    checks::batch_matches_single(&net, &inputs(&case, &net, BATCH), BATCH)?;
                }

                #[test]
                fn f32_matches_f64(case in $case) {
                    let net = build(&case);
                    checks::f32_matches_f64(&net, &inputs(&case, &net, BATCH), BATCH)?;
                }
            }
        }
    )*};
}

properties! {
    conv2d => kind_case(Kind::Conv2d);
    max_pool2d => kind_case(Kind::MaxPool2d);
    avg_pool2d => kind_case(Kind::AvgPool2d);
    global_avg_pool => kind_case(Kind::GlobalAvgPool);
    dense => kind_case(Kind::Dense);
    add => kind_case(Kind::Add);
    affine => kind_case(Kind::Affine);
    batch_norm => kind_case(Kind::BatchNorm);
    relu => kind_case(Kind::Relu);
    leaky_relu => kind_case(Kind::LeakyRelu);
    sigmoid => kind_case(Kind::Sigmoid);
    tanh => kind_case(Kind::Tanh);
    clip => kind_case(Kind::Clip);
    reshape => kind_case(Kind::Reshape);
    concat => kind_case(Kind::Concat);
    pad => kind_case(Kind::Pad);
    transpose => kind_case(Kind::Transpose);
    identity => kind_case(Kind::Identity);
    random_network => random_case();
}
