//! Making a write survive a power loss, for the files both binaries replace by rename (the
//! adapter registry, training checkpoints): the file's bytes are synced before the rename,
//! and the directory after it, since the rename itself lives in the directory.

use std::path::Path;

/// Flushes a written file's bytes to the disk.
pub fn sync_file(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// Flushes the entries of `dir` (renames, new and removed files) to the disk.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
