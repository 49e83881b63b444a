//! The file transport's writing: one `<message id>.eml` per mail, written to a temporary file
//! and renamed into place, so a crash never leaves half a message and a resend overwrites.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::domain::random_alnum;

/// `<abc.123@example.com>` → `abc.123@example.com.eml`; anything unusual becomes `_`.
pub(crate) fn file_name(message_id: &str) -> String {
    let inner = message_id
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>');
    let safe: String = inner
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "@.-_+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    // Never a hidden file, never empty, never `..`.
    let safe = safe.trim_start_matches('.');
    let safe = if safe.is_empty() { "message" } else { safe };
    format!("{safe}.eml")
}

pub(crate) fn write(dir: &Path, message_id: &str, bytes: &[u8]) -> io::Result<PathBuf> {
    let context = |what: &str, path: &Path, e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("file outbox: cannot {what} {}: {e}", path.display()),
        )
    };
    fs::create_dir_all(dir).map_err(|e| context("create", dir, e))?;
    let target = dir.join(file_name(message_id));
    // Starts with a dot and does not end in .eml, so readers of the outbox never pick it up.
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        file_name(message_id),
        random_alnum(8)
    ));
    let result = (|| {
        // Owner-only: a message carries a live link (session token or one-time link).
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, &target)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&temp);
        return Err(context("write", &target, e));
    }
    // The rename is only durable once the directory entry is.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(target)
}

pub(crate) fn check_writable(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".check.{}.tmp", random_alnum(8)));
    fs::write(&probe, b"probe")?;
    fs::remove_file(&probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("outbox-mode-{}", random_alnum(8)));
        let path = write(&dir, "<m@example.com>", b"Subject: x\r\n\r\nlink").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(mode, 0o600, "{mode:o}");
    }

    #[test]
    fn file_names_are_safe() {
        assert_eq!(
            file_name("<abc.123@example.com>"),
            "abc.123@example.com.eml"
        );
        assert_eq!(file_name("<../../etc/passwd>"), "_.._etc_passwd.eml");
        assert_eq!(file_name("<>"), "message.eml");
    }
}
