//! The text form of the IR: a printer and a parser that round-trip.

/// Whether `s` can be printed without quotes as a value name or dim symbol.
pub fn is_plain_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}
