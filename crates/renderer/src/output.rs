//! Writing heatmaps into the output folder under names the renderer alone chooses.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use protocol::names::{heatmap_file_name, is_heatmap_name};

use crate::error::Error;

/// Most `-N` suffixes tried for one second's stamp before giving up.
const MAX_ATTEMPTS: u32 = 10_000;

/// Writes `png` to `out_dir` as `heatmap_<stamp>.png`, or `heatmap_<stamp>-N.png` if that
/// exists, and returns the name.
///
/// `create_new` makes the choice atomic: two renders in the same second never overwrite
/// each other, even from two renderer processes sharing the folder.
///
/// With `sync` (the renderer's `--fsync`) the file is on disk before the name is
/// returned; without it the operating system has it, as for stored batches: a heatmap is
/// derived from the stored points and can be generated again, so it takes no more care
/// than they do.
///
/// # Errors
/// [`Error::Write`] if the folder is missing, not writable or full.
pub fn write_heatmap(out_dir: &Path, stamp: &str, png: &[u8], sync: bool) -> Result<String, Error> {
    for attempt in 0..MAX_ATTEMPTS {
        let name = heatmap_file_name(stamp, attempt);
        let path = out_dir.join(&name);
        let mut file = match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(Error::Write { path, source }),
        };
        if let Err(source) =
            file.write_all(png)
                .and_then(|()| if sync { file.sync_data() } else { Ok(()) })
        {
            // Leave no truncated image behind for the page to show.
            let _ = std::fs::remove_file(&path);
            return Err(Error::Write { path, source });
        }
        return Ok(name);
    }
    Err(Error::Write {
        path: out_dir.to_owned(),
        source: std::io::Error::new(
            ErrorKind::AlreadyExists,
            "every name for this second is taken",
        ),
    })
}

/// The path of an existing heatmap, if `name` has the exact heatmap shape.
///
/// This is the only way a name from a request becomes a path: the shape check rules out
/// separators and `..`, so the result is always directly inside `out_dir`.
pub fn heatmap_path(out_dir: &Path, name: &str) -> Option<PathBuf> {
    is_heatmap_name(name).then(|| out_dir.join(name))
}

/// Reads the heatmap at `path` (from [`heatmap_path`]), which must be a regular file of
/// its own: a symbolic link planted in the output folder under a heatmap name is refused,
/// so the folder cannot be used to serve files from elsewhere.
///
/// The entry is checked with `symlink_metadata` (which does not follow links), then opened,
/// and the opened file must be that very entry (same device and inode): a link swapped in
/// between the check and the open is caught too.
///
/// # Errors
/// `NotFound` for a missing entry and for anything that is not a regular file (a link, a
/// folder, a device), so the answer does not reveal what is there; other IO errors as they are.
pub fn read_heatmap(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;

    let not_a_heatmap = || std::io::Error::new(ErrorKind::NotFound, "not a regular file");
    let entry = std::fs::symlink_metadata(path)?;
    if !entry.file_type().is_file() {
        return Err(not_a_heatmap());
    }
    let mut file = std::fs::File::open(path)?;
    let opened = file.metadata()?;
    if !opened.is_file() || opened.dev() != entry.dev() || opened.ino() != entry.ino() {
        return Err(not_a_heatmap());
    }
    let mut bytes = Vec::with_capacity(opened.len() as usize);
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The local time stamp used in file names: `YYYY-MM-DD_HH-MM-SS`.
pub fn local_stamp(now: chrono::DateTime<chrono::Local>) -> String {
    now.format("%Y-%m-%d_%H-%M-%S").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collisions_get_a_suffix() {
        let dir = std::env::temp_dir().join(format!("heatmap-output-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let stamp = "2026-11-29_19-30-05";
        let names: Vec<String> = (0..3)
            .map(|_| write_heatmap(&dir, stamp, b"png", false).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "heatmap_2026-11-29_19-30-05.png",
                "heatmap_2026-11-29_19-30-05-1.png",
                "heatmap_2026-11-29_19-30-05-2.png"
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unwritable_folder_is_a_clear_error() {
        let missing = std::env::temp_dir().join("heatmap-output-test-missing/nested");
        let err = write_heatmap(&missing, "2026-11-29_19-30-05", b"png", true).unwrap_err();
        assert!(err.to_string().starts_with("cannot write"), "{err}");
    }

    #[test]
    fn a_symlink_under_a_heatmap_name_is_not_read() {
        let dir = std::env::temp_dir().join(format!("heatmap-output-link-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let outside = dir.join("outside.txt");
        std::fs::write(&outside, b"secret").unwrap();
        let link = heatmap_path(&dir, "heatmap_2026-11-29_19-30-05.png").unwrap();
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        let err = read_heatmap(&link).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        let real = heatmap_path(&dir, "heatmap_2026-11-29_19-30-06.png").unwrap();
        std::fs::write(&real, b"png").unwrap();
        assert_eq!(read_heatmap(&real).unwrap(), b"png");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn request_names_cannot_leave_the_folder() {
        let dir = Path::new("/srv/out");
        assert_eq!(
            heatmap_path(dir, "heatmap_2026-11-29_19-30-05.png"),
            Some(dir.join("heatmap_2026-11-29_19-30-05.png"))
        );
        assert_eq!(heatmap_path(dir, "../etc/passwd"), None);
        assert_eq!(heatmap_path(dir, "/etc/passwd"), None);
    }
}
