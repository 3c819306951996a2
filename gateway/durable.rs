//! Files that must survive a crash whole: written to a temporary file beside the target,
//! synced, renamed over it, and the directory synced, so a reader sees the old content or the
//! new, never a part.

use std::io::Write as _;
use std::path::Path;

/// Replaces `path` with `bytes`, creating its directory if needed.
pub fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let temporary = dir.join(name);
    let mut out = std::fs::File::create(&temporary)?;
    out.write_all(bytes)?;
    out.sync_all()?;
    std::fs::rename(&temporary, path)?;
    sync_dir(dir)
}

/// Makes the names in `dir` (a file created, renamed or removed there) durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Makes `path` read-only for everyone.
pub fn read_only(path: &Path) -> std::io::Result<()> {
    let mut permissions = std::fs::metadata(path)?.permissions();
    permissions.set_readonly(true);
    std::fs::set_permissions(path, permissions)
}
