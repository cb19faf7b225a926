//! `diskcast info`: what an image is, in human text or JSON.

use super::{Images, print_json};
use crate::args::{InfoArgs, OutputFormat};
use diskcast_block::size::human;
use diskcast_block::{BlockRead, ImageInfo, Result};
use serde_json::{Value, json};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub fn run(a: InfoArgs) -> Result<u8> {
    let images = Images::new(&a.open)?;
    // Like qemu-img info, describe the image without opening its backing file unless the
    // chain is asked for: so an untrusted image can be inspected whatever it names.
    let ctx = if a.backing_chain { images.context() } else { images.context_without_backing() };
    let image = images.registry.open(&a.file, a.format.as_deref(), &ctx)?;
    // The chain: (display name, image), top first. Backing names resolve against the
    // directory of the image that names them, as the gate resolved them.
    let mut chain: Vec<(PathBuf, &dyn BlockRead)> = vec![(a.file.clone(), image.as_ref())];
    while let Some((path, img)) = chain.last().cloned() {
        let (Some(below), Some(name)) = (img.backing(), img.info().backing_file) else { break };
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        chain.push((dir.join(name), below));
    }
    let entries: Vec<Value> = chain.iter().map(|(p, img)| entry_json(p, &img.info())).collect();
    match a.output {
        OutputFormat::Json => {
            let mut top = entries.first().cloned().unwrap_or(Value::Null);
            if let (Value::Object(m), true) = (&mut top, a.backing_chain) {
                m.insert("backing-chain".into(), Value::Array(entries.iter().skip(1).cloned().collect()));
            }
            print_json(&top);
        }
        OutputFormat::Human => {
            for (i, (path, img)) in chain.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print_human(path, &img.info());
            }
        }
    }
    Ok(0)
}

/// Bytes the file takes on disk (allocated blocks), if it can be stat'ed.
fn disk_usage(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.blocks().saturating_mul(512))
}

fn entry_json(path: &Path, info: &ImageInfo) -> Value {
    let mut v = json!({
        "filename": path.display().to_string(),
        "format": info.format,
        "virtual-size": info.virtual_size,
    });
    if let Some(m) = v.as_object_mut() {
        if let Some(n) = disk_usage(path) {
            m.insert("actual-size".into(), n.into());
        }
        if let Some(c) = info.cluster_size {
            m.insert("cluster-size".into(), c.into());
        }
        if let Some(c) = &info.compression {
            m.insert("compression-type".into(), c.clone().into());
        }
        if let Some(b) = &info.backing_file {
            m.insert("backing-filename".into(), b.clone().into());
        }
        if let Some(b) = &info.backing_format {
            m.insert("backing-filename-format".into(), b.clone().into());
        }
        if !info.specific.is_empty() {
            m.insert("format-specific".into(), Value::Object(info.specific.clone()));
        }
    }
    v
}

fn print_human(path: &Path, info: &ImageInfo) {
    println!("image: {}", path.display());
    println!("file format: {}", info.format);
    println!("virtual size: {} ({} bytes)", human(info.virtual_size), info.virtual_size);
    if let Some(n) = disk_usage(path) {
        println!("disk size: {}", human(n));
    }
    if let Some(c) = info.cluster_size {
        println!("cluster_size: {c}");
    }
    if let Some(c) = &info.compression {
        println!("compression type: {c}");
    }
    if let Some(b) = &info.backing_file {
        println!("backing file: {b}");
    }
    if let Some(b) = &info.backing_format {
        println!("backing file format: {b}");
    }
    if !info.specific.is_empty() {
        println!("Format specific information:");
        print_fields(&info.specific, 1);
    }
}

/// Prints format-specific facts as an indented tree, as qemu-img info does: scalars on
/// their key's line, objects and lists (VMDK extents, say) nested below it.
fn print_fields(map: &serde_json::Map<String, Value>, depth: usize) {
    let pad = "    ".repeat(depth);
    for (k, v) in map {
        match v {
            Value::Object(inner) => {
                println!("{pad}{k}:");
                print_fields(inner, depth + 1);
            }
            Value::Array(items) if items.iter().any(|i| i.is_object()) => {
                println!("{pad}{k}:");
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::Object(inner) => {
                            println!("{pad}    [{i}]:");
                            print_fields(inner, depth + 2);
                        }
                        other => println!("{pad}    [{i}]: {}", scalar(other)),
                    }
                }
            }
            other => println!("{pad}{k}: {}", scalar(other)),
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
