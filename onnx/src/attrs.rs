//! Typed access to the attributes of an ONNX node.

use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::{AttributeProto, NodeProto, TensorProto};

use crate::error::{Error, Result};

/// The attributes of one node, with its names for messages.
pub(crate) struct Attrs<'a> {
    node: &'a NodeProto,
    /// The node's display name.
    pub name: &'a str,
}

impl<'a> Attrs<'a> {
    pub fn new(node: &'a NodeProto, name: &'a str) -> Self {
        Attrs { node, name }
    }

    fn get(&self, name: &str) -> Option<&'a AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }

    /// Whether the attribute is present.
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    fn typed(&self, name: &str, want: AttributeType) -> Result<Option<&'a AttributeProto>> {
        match self.get(name) {
            None => Ok(None),
            // IR version 1 files may leave the type unset.
            Some(a) if a.r#type == want as i32 || a.r#type == AttributeType::Undefined as i32 => Ok(Some(a)),
            Some(a) => Err(Error::BadGraph(format!(
                "node `{}` ({}): attribute `{name}` should have type {} but has type {}",
                self.name,
                self.node.op_type,
                want.as_str_name(),
                AttributeType::try_from(a.r#type).map(|t| t.as_str_name()).unwrap_or("unknown")
            ))),
        }
    }

    /// An integer attribute, or `default`.
    pub fn int(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self.typed(name, AttributeType::Int)?.map_or(default, |a| a.i))
    }

    /// An integer-list attribute.
    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        Ok(self.typed(name, AttributeType::Ints)?.map(|a| a.ints.clone()))
    }

    /// A float attribute, or `default`.
    pub fn float(&self, name: &str, default: f32) -> Result<f32> {
        Ok(self.typed(name, AttributeType::Float)?.map_or(default, |a| a.f))
    }

    /// A float-list attribute.
    pub fn floats(&self, name: &str) -> Result<Option<Vec<f32>>> {
        Ok(self.typed(name, AttributeType::Floats)?.map(|a| a.floats.clone()))
    }

    /// A string attribute, or `default`.
    pub fn string(&self, name: &str, default: &str) -> Result<String> {
        Ok(self
            .typed(name, AttributeType::String)?
            .map_or_else(|| default.to_string(), |a| String::from_utf8_lossy(&a.s).into_owned()))
    }

    /// A tensor attribute.
    pub fn tensor(&self, name: &str) -> Result<Option<&'a TensorProto>> {
        Ok(self.typed(name, AttributeType::Tensor)?.and_then(|a| a.t.as_ref()))
    }
}
