//! FAT and exFAT images of files held in two front-to-back streams (two GNU tars, as the
//! layers of an image are) are laid out by the tree's one schedule: the same tree gives
//! the same bytes whichever stream was opened first, and the stream met first in the
//! tree's walk is laid out first. Judged by `fsck.fat -n` and `fsck.exfat -n`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_block::BlockRead;
use diskcast_exfat::{ExfatBuilder, ExfatReader};
use diskcast_fat::{FatBuilder, FatReader};
use diskcast_testkit::{pattern, run, run_utc};
use diskcast_tree::{BuildOptions, Content, FsBuilder, FsReader, Meta, ReadOptions, Timestamp, Tree};
use std::path::Path;
use std::sync::Arc;

/// A GNU tar of `files` (name, size) made in `dir`.
fn gnu_tar(dir: &Path, name: &str, files: &[(&str, usize)]) -> std::path::PathBuf {
    let src = dir.join(name);
    std::fs::create_dir_all(&src).unwrap();
    for (i, (f, size)) in files.iter().enumerate() {
        std::fs::write(src.join(f), pattern(*size, u64::try_from(i + 1).unwrap())).unwrap();
    }
    let tar = dir.join(format!("{name}.tar"));
    run("tar", &["--format=gnu", "-cf", tar.to_str().unwrap(), "-C", src.to_str().unwrap(), "."]);
    tar
}

/// `a/` from the `second` tar, `b/` from the `first`: the walk meets `second`'s stream
/// first. `second_opened_first` picks which tar is read (its stream made) first.
fn tree(first: &Path, second: &Path, second_opened_first: bool) -> Tree {
    let (one, two) = if second_opened_first {
        let two = diskcast_tar::read_tar(second).unwrap().tree;
        (diskcast_tar::read_tar(first).unwrap().tree, two)
    } else {
        let one = diskcast_tar::read_tar(first).unwrap().tree;
        (one, diskcast_tar::read_tar(second).unwrap().tree)
    };
    let mut t = Tree::new(Meta::new(0o755, Timestamp::from_secs(1_600_000_000)));
    for (dir, src) in [(&b"a"[..], &two), (b"b", &one)] {
        t.create_dir_all(dir, &Meta::new(0o755, Timestamp::from_secs(1_600_000_000))).unwrap();
        t.graft(dir, src).unwrap();
    }
    t
}

/// Where `path`'s first byte sits in the image, read back by our reader.
fn offset_of(reader: &dyn FsReader, image: Arc<dyn BlockRead>, path: &[u8]) -> u64 {
    let back = reader.read(image, &ReadOptions::default()).unwrap();
    let f = back.node(back.resolve(path, false).unwrap()).as_file().unwrap().clone();
    match &f.content {
        Content::Blocks { extents, .. } => extents[0].source_offset,
        Content::Reader(_) => {
            panic!("{} is not contiguous", String::from_utf8_lossy(path))
        }
        other => panic!("unexpected content {other:?}"),
    }
}

#[test]
fn two_streams_lay_out_the_same_whichever_was_opened_first() {
    let dir = tempfile::tempdir().unwrap();
    let first = gnu_tar(dir.path(), "first", &[("f1", 70_000), ("f2", 9_000)]);
    let second = gnu_tar(dir.path(), "second", &[("s1", 50_000), ("s2", 3_000)]);
    let builders: [(&dyn FsBuilder, &dyn FsReader, &str); 2] =
        [(&FatBuilder::FAT16, &FatReader, "fsck.fat"), (&ExfatBuilder, &ExfatReader, "fsck.exfat")];
    for (builder, reader, fsck) in builders {
        let opts = BuildOptions { size: Some(64 << 20), ..BuildOptions::default() };
        let mut images = Vec::new();
        for second_opened_first in [false, true] {
            let t = tree(&first, &second, second_opened_first);
            let img: Arc<dyn BlockRead> = Arc::new(builder.plan(&t, &opts).unwrap().image);
            let mut bytes = vec![0u8; usize::try_from(img.size()).unwrap()];
            img.read_at(&mut bytes, 0).unwrap();
            assert!(
                offset_of(reader, img.clone(), b"a/s1") < offset_of(reader, img.clone(), b"b/f1"),
                "{}: the stream met first in the walk is laid out first",
                builder.name()
            );
            images.push(bytes);
        }
        assert!(images[0] == images[1], "{}: the layout depends on which stream was opened first", builder.name());
        let file = dir.path().join(format!("{}.img", builder.name()));
        std::fs::write(&file, &images[0]).unwrap();
        run_utc(fsck, &["-n", file.to_str().unwrap()]);
        std::fs::remove_file(&file).unwrap();
    }
}
