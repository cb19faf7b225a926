//! A change to how an image's data is read (pacing, error handling), applied by
//! [`Filtered`] while everything else about the image (size, backing, info, identity)
//! passes through unchanged: each filter writes only the reads it changes.

use crate::{BlockRead, Extent, ImageInfo, Result};

/// What a filter changes about reading `inner`. Both methods default to reading through.
pub trait ReadFilter: Send + Sync + std::fmt::Debug {
    /// [`BlockRead::read_at`] of the filtered image.
    fn read_at(&self, inner: &dyn BlockRead, buf: &mut [u8], offset: u64) -> Result<()> {
        inner.read_at(buf, offset)
    }

    /// [`BlockRead::extent_at`] of the filtered image.
    fn extent_at(&self, inner: &dyn BlockRead, offset: u64, max_len: u64) -> Result<Extent> {
        inner.extent_at(offset, max_len)
    }
}

/// An image read through a [`ReadFilter`].
#[derive(Debug)]
pub struct Filtered<'a, F> {
    inner: &'a dyn BlockRead,
    filter: F,
}

impl<'a, F: ReadFilter> Filtered<'a, F> {
    /// `inner` read through `filter`.
    pub fn new(inner: &'a dyn BlockRead, filter: F) -> Self {
        Filtered { inner, filter }
    }
}

impl<F: ReadFilter> BlockRead for Filtered<'_, F> {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.filter.read_at(self.inner, buf, offset)
    }

    fn extent_at(&self, offset: u64, max_len: u64) -> Result<Extent> {
        self.filter.extent_at(self.inner, offset, max_len)
    }

    fn backing(&self) -> Option<&dyn BlockRead> {
        self.inner.backing()
    }

    fn info(&self) -> ImageInfo {
        self.inner.info()
    }

    fn unique_id(&self) -> Option<[u8; 16]> {
        self.inner.unique_id()
    }
}
