//! What the one-shot commands print on stdout. `println!` panics when stdout is a pipe
//! whose reader has gone (`trust-proxy cert inspect cert.pem | head -1`); [`out!`] treats
//! that reader as done with us and ends the process quietly with 0, as `head`'s writer
//! expects, and any other write failure (a full disk behind a redirect) exits 74 with
//! the reason. Long-running commands keep `println!` for their "listening on" lines.

use std::io::Write as _;

/// Writes one line to stdout (see the module docs).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::line(format_args!($($arg)*))
    };
}
pub(crate) use out;

/// The body of [`out!`].
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(format_args!("{args}\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("trust-proxy: cannot write to stdout: {e}");
        std::process::exit(74);
    }
}
