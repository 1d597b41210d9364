//! Untrusted text made safe for a terminal, a log or a CI page: the one place that decides
//! which characters never reach them raw. Pure.

/// `text` safe to print on a terminal or into a CI log: control characters (escape sequences,
/// carriage returns, newlines, NUL) and the bidirectional overrides and isolates that reorder
/// what a reader sees are shown as `\u{..}`. Every string that comes from a manifest, a
/// package, a repository database, a git note or a scriptlet goes through this before it is
/// printed as text; JSON output needs nothing (serde escapes control characters).
pub fn terminal_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_unsafe_char(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `c` must not reach a terminal or a rendered document raw: a control character, or a
/// bidirectional override/isolate (U+202A–U+202E, U+2066–U+2069).
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// `text` quoted in a message: [`terminal_safe`], and cut after `max` characters (with `…`), for
/// values from untrusted input (a note, a manifest) that errors quote.
pub fn quoted(text: &str, max: usize) -> String {
    let mut cut: String = text.chars().take(max).collect();
    if text.chars().nth(max).is_some() {
        cut.push('…');
    }
    terminal_safe(&cut)
}
