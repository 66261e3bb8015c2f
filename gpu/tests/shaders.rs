//! Every kernel parses and validates with naga, has exactly one entry point (named like its
//! file), and its uniform struct has the host struct's size and field offsets.

use certify_gpu::shaders::{host_layouts, ALL};

fn parse(name: &str, source: &str) -> naga::Module {
    naga::front::wgsl::parse_str(source).unwrap_or_else(|e| panic!("{name}.wgsl: {}", e.emit_to_string(source)))
}

#[test]
fn every_shader_validates_with_one_entry_point() {
    for k in ALL {
        let module = parse(k.name, k.source);
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::default())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}.wgsl does not validate: {}", k.name, e.emit_to_string(k.source)));
        assert_eq!(module.entry_points.len(), 1, "{}.wgsl", k.name);
        let ep = &module.entry_points[0];
        assert_eq!(ep.name, k.name, "{}.wgsl: the entry point is named like the file", k.name);
        assert_eq!(ep.stage, naga::ShaderStage::Compute);
        assert_eq!(ep.workgroup_size, [certify_gpu::shaders::WORKGROUP, 1, 1], "{}.wgsl", k.name);
    }
}

#[test]
fn every_shader_file_is_listed() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/shaders");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wgsl"))
        .collect();
    files.sort();
    let mut listed: Vec<String> = ALL.iter().map(|k| format!("{}.wgsl", k.name)).collect();
    listed.sort();
    assert_eq!(files, listed);
}

#[test]
fn uniform_structs_match_the_host_layouts() {
    let layouts = host_layouts();
    for k in ALL {
        let module = parse(k.name, k.source);
        let mut layouter = naga::proc::Layouter::default();
        layouter.update(module.to_ctx()).unwrap();
        let host = layouts
            .iter()
            .find(|l| l.name == k.uniform)
            .unwrap_or_else(|| panic!("no host layout for {} of {}", k.uniform, k.name));
        let (handle, ty) = module
            .types
            .iter()
            .find(|(_, t)| t.name.as_deref() == Some(k.uniform))
            .unwrap_or_else(|| panic!("{}.wgsl declares no struct {}", k.name, k.uniform));
        let naga::TypeInner::Struct { members, span } = &ty.inner else { panic!("{} is not a struct", k.uniform) };
        assert_eq!(*span as usize, host.size, "{}: size of {} (WGSL vs host)", k.name, k.uniform);
        assert_eq!(layouter[handle].size as usize, host.size);
        // Uniform buffers: the size is a multiple of 16 bytes.
        assert_eq!(host.size % 16, 0, "{} size {}", k.uniform, host.size);
        let wgsl: Vec<(String, usize)> =
            members.iter().map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize)).collect();
        let hostf: Vec<(String, usize)> = host.fields.iter().map(|(n, o)| (n.to_string(), *o)).collect();
        assert_eq!(wgsl, hostf, "{}: fields and offsets of {}", k.name, k.uniform);
        // Every field is a 4-byte scalar, as the host struct (u32 / f32).
        for m in members {
            let inner = &module.types[m.ty].inner;
            assert!(
                matches!(inner, naga::TypeInner::Scalar(s) if s.width == 4),
                "{}: field {:?} is {inner:?}",
                k.uniform,
                m.name
            );
        }
        // Bound as uniform at group 0, binding 0.
        let uniform = module
            .global_variables
            .iter()
            .find(|(_, g)| g.space == naga::AddressSpace::Uniform)
            .map(|(_, g)| (g.ty, g.binding))
            .expect("a uniform");
        assert_eq!(uniform.0, handle);
        assert_eq!(uniform.1, Some(naga::ResourceBinding { group: 0, binding: 0 }));
    }
}
