//! Container images as trees: OCI image layouts (`oci:`), OCI archives (`oci-archive:`),
//! `docker save` tarballs (`docker-archive:`) and registries (`docker://`), in skopeo's
//! transport syntax.
//!
//! [`open`] resolves a reference to one image (picking a platform from an index) with
//! every manifest, config and layer checked against its digest and size; [`flatten`]
//! applies the layers into a [`diskcast_tree::Tree`] whose file contents are references
//! into the layer blobs. Specs: OCI image-spec (image-layout.md, manifest.md,
//! image-index.md, config.md, layer.md) and distribution-spec.
#![forbid(unsafe_code)]

pub mod blobs;
pub mod digest;
pub mod flatten;
pub mod image;
pub mod inspect;
pub mod pargz;
pub mod pipe;
pub mod registry;
pub mod sigstore;
pub mod source;
pub mod spec;
pub mod write;

pub use digest::Digest;
pub use flatten::{Flattened, flatten};
pub use image::{Image, Layer, OpenOptions};
pub use source::{ImageRef, RegistryRef, is_image_ref};
pub use spec::Platform;

use diskcast_block::Result;

/// Opens the image a reference string names (`oci:DIR[:REF]`, `docker://...`).
pub fn open(spec: &str, opts: &OpenOptions) -> Result<Image> {
    let mut img = image::open(&ImageRef::parse(spec)?, opts)?;
    img.source = spec.to_string();
    Ok(img)
}

/// Opens and flattens (`threads` layers at once): the image's root filesystem as a
/// tree, with the members skipped.
pub fn open_tree(spec: &str, opts: &OpenOptions, threads: usize) -> Result<Flattened> {
    let img = open(spec, opts)?;
    flatten(&img, threads)
}
