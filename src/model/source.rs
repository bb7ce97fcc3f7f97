//! Where adapters read tensors from: safetensors files (one or many shards) or a GGUF file.
use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// A named-tensor store. Every tensor comes out as f32 on `device`.
pub trait TensorSource {
    fn has(&self, name: &str) -> bool;
    /// The tensor called `name`, as f32.
    fn get(&self, name: &str) -> Result<Tensor>;
    /// Which file to blame in errors.
    fn path(&self) -> &Path;

    /// The first of `names` that exists (checkpoints in the wild disagree on prefixes).
    fn get_any(&self, names: &[String]) -> Result<Tensor> {
        for n in names {
            if self.has(n) {
                return self.get(n);
            }
        }
        Err(Error::BadCheckpoint { path: self.path().to_path_buf(), reason: format!("missing tensor `{}`", names[0]) })
    }
}

/// Memory-mapped safetensors shards.
pub struct Safetensors {
    files: candle_core::safetensors::MmapedSafetensors,
    names: HashMap<String, ()>,
    path: PathBuf,
    device: Device,
}

impl Safetensors {
    pub fn open(paths: &[PathBuf], device: &Device) -> Result<Self> {
        let first = paths.first().cloned().unwrap_or_default();
        for p in paths {
            if !p.is_file() {
                return Err(Error::BadCheckpoint { path: p.clone(), reason: "file not found".into() });
            }
        }
        // SAFETY: the files are opened read-only and kcirc never writes to them while mapped.
        let files = unsafe { candle_core::safetensors::MmapedSafetensors::multi(paths) }
            .map_err(|e| Error::BadCheckpoint { path: first.clone(), reason: one_line(&e) })?;
        let names = files.tensors().into_iter().map(|(n, _)| (n, ())).collect();
        Ok(Self { files, names, path: first, device: device.clone() })
    }
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.names.keys()
    }
}

impl TensorSource for Safetensors {
    fn has(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }
    fn get(&self, name: &str) -> Result<Tensor> {
        let t = self
            .files
            .load(name, &self.device)
            .map_err(|e| Error::BadCheckpoint { path: self.path.clone(), reason: format!("tensor `{name}`: {}", one_line(&e)) })?;
        Ok(t.to_dtype(DType::F32)?)
    }
    fn path(&self) -> &Path {
        &self.path
    }
}

/// A GGUF file: metadata plus tensors, dequantised to f32 on read.
pub struct Gguf {
    pub content: gguf_file::Content,
    file: std::sync::Mutex<BufReader<File>>,
    path: PathBuf,
    device: Device,
}

impl Gguf {
    pub fn open(path: &Path, device: &Device) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut reader = BufReader::new(file);
        let content =
            gguf_file::Content::read(&mut reader).map_err(|e| Error::BadCheckpoint { path: path.to_path_buf(), reason: one_line(&e) })?;
        Ok(Self { content, file: std::sync::Mutex::new(reader), path: path.to_path_buf(), device: device.clone() })
    }

    fn meta(&self, key: &str) -> Result<&gguf_file::Value> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| Error::BadCheckpoint { path: self.path.clone(), reason: format!("missing metadata `{key}`") })
    }
    pub fn has_meta(&self, key: &str) -> bool {
        self.content.metadata.contains_key(key)
    }
    pub fn meta_usize(&self, key: &str) -> Result<usize> {
        let v = self.meta(key)?;
        let n = v
            .to_u64()
            .or_else(|_| v.to_u32().map(u64::from))
            .or_else(|_| v.to_i32().map(|x| x.max(0) as u64))
            .map_err(|e| self.bad(key, e))?;
        Ok(n as usize)
    }
    pub fn meta_f64(&self, key: &str) -> Result<f64> {
        let v = self.meta(key)?;
        v.to_f32().map(f64::from).or_else(|_| v.to_f64()).map_err(|e| self.bad(key, e))
    }
    pub fn meta_str(&self, key: &str) -> Result<String> {
        Ok(self.meta(key)?.to_string().map_err(|e| self.bad(key, e))?.clone())
    }
    pub fn meta_bool(&self, key: &str) -> Option<bool> {
        self.content.metadata.get(key).and_then(|v| v.to_bool().ok())
    }
    pub fn meta_strings(&self, key: &str) -> Result<Vec<String>> {
        self.meta(key)?
            .to_vec()
            .map_err(|e| self.bad(key, e))?
            .iter()
            .map(|v| v.to_string().cloned().map_err(|e| self.bad(key, e)))
            .collect()
    }
    pub fn meta_i64s(&self, key: &str) -> Result<Vec<i64>> {
        self.meta(key)?
            .to_vec()
            .map_err(|e| self.bad(key, e))?
            .iter()
            .map(|v| v.to_i32().map(i64::from).or_else(|_| v.to_i64()).or_else(|_| v.to_u32().map(i64::from)).map_err(|e| self.bad(key, e)))
            .collect()
    }
    fn bad(&self, key: &str, e: impl std::fmt::Display) -> Error {
        Error::BadCheckpoint { path: self.path.clone(), reason: format!("metadata `{key}`: {e}") }
    }
}

impl TensorSource for Gguf {
    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }
    fn get(&self, name: &str) -> Result<Tensor> {
        let mut reader = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let bad =
            |e: candle_core::Error| Error::BadCheckpoint { path: self.path.clone(), reason: format!("tensor `{name}`: {}", one_line(&e)) };
        let q = self.content.tensor(&mut *reader, name, &self.device).map_err(bad)?;
        Ok(q.dequantize(&self.device).map_err(bad)?.to_dtype(DType::F32)?)
    }
    fn path(&self) -> &Path {
        &self.path
    }
}

/// The first line of an error, for one-line messages.
pub fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or("").trim().to_string()
}
