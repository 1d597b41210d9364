//! Finding where a value sits in a YAML file, so that problems found after parsing (an unknown
//! package set, a cycle, a missing pin) are reported at a line and column like syntax errors are.
//!
//! serde_yaml gives positions only for its own errors; this walks the YAML event stream once
//! (yaml-rust2's marked parser) and follows a path of keys and indices.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// One step of a path into a YAML document.
#[derive(Debug, Clone, Copy)]
pub enum Seg<'a> {
    /// A mapping key.
    Key(&'a str),
    /// A sequence index.
    Index(usize),
}

enum Node {
    Scalar(String),
    Seq(Vec<(Marker, Node)>),
    Map(Vec<((Marker, Node), (Marker, Node))>),
    Other,
}

#[derive(Default)]
struct Builder {
    stack: Vec<(Marker, Node)>,
    // For maps: whether the next pushed item is a key.
    pending_keys: Vec<Option<(Marker, Node)>>,
    root: Option<(Marker, Node)>,
}

impl Builder {
    fn push(&mut self, item: (Marker, Node)) {
        match self.stack.last_mut() {
            None => self.root = Some(item),
            Some((_, Node::Seq(items))) => items.push(item),
            Some((_, Node::Map(entries))) => {
                let pending = self.pending_keys.last_mut();
                match pending {
                    Some(slot @ None) => *slot = Some(item),
                    Some(slot) => {
                        if let Some(key) = slot.take() {
                            entries.push((key, item));
                        }
                    }
                    None => {}
                }
            }
            Some(_) => {}
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(s, ..) => self.push((mark, Node::Scalar(s))),
            Event::Alias(_) => self.push((mark, Node::Other)),
            Event::SequenceStart(..) => self.stack.push((mark, Node::Seq(Vec::new()))),
            Event::MappingStart(..) => {
                self.stack.push((mark, Node::Map(Vec::new())));
                self.pending_keys.push(None);
            }
            Event::SequenceEnd => {
                if let Some(node) = self.stack.pop() {
                    self.push(node);
                }
            }
            Event::MappingEnd => {
                self.pending_keys.pop();
                if let Some(node) = self.stack.pop() {
                    self.push(node);
                }
            }
            _ => {}
        }
    }
}

fn tree(text: &str) -> Option<(Marker, Node)> {
    let mut builder = Builder::default();
    Parser::new_from_str(text).load(&mut builder, false).ok()?;
    builder.root
}

/// The node at `path`, or the deepest ancestor of it that exists.
fn walk<'n>(root: &'n (Marker, Node), path: &[Seg<'_>]) -> &'n (Marker, Node) {
    let mut at = root;
    for seg in path {
        let next = match (seg, &at.1) {
            (Seg::Key(k), Node::Map(entries)) => entries
                .iter()
                .find(|(key, _)| matches!(&key.1, Node::Scalar(s) if s == k))
                .map(|(_, value)| value),
            (Seg::Index(i), Node::Seq(items)) => items.get(*i),
            _ => None,
        };
        match next {
            Some(n) => at = n,
            None => break,
        }
    }
    at
}

/// 1-based (line, column) of the value at `path` in `text`; the deepest ancestor found when
/// the full path is not there; (1, 1) when the text does not parse.
pub fn locate(text: &str, path: &[Seg<'_>]) -> (usize, usize) {
    let Some(root) = tree(text) else {
        return (1, 1);
    };
    let at = walk(&root, path);
    if std::ptr::eq(at, &root) {
        return (1, 1); // the document itself: its first line
    }
    position(&at.0)
}

/// 1-based (line, column) of the first scalar whose value is `value` (used where serde_yaml
/// reports a bad value without its position).
pub fn find_scalar(text: &str, value: &str) -> Option<(usize, usize)> {
    struct Find<'v> {
        value: &'v str,
        found: Option<Marker>,
    }
    impl MarkedEventReceiver for Find<'_> {
        fn on_event(&mut self, ev: Event, mark: Marker) {
            if let Event::Scalar(s, ..) = ev
                && self.found.is_none()
                && s == self.value
            {
                self.found = Some(mark);
            }
        }
    }
    let mut find = Find { value, found: None };
    Parser::new_from_str(text).load(&mut find, false).ok()?;
    find.found.map(|m| position(&m))
}

fn position(m: &Marker) -> (usize, usize) {
    // yaml-rust2 lines are 1-based, columns 0-based.
    (m.line().max(1), m.col() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "kind: Pool\nname: ws\npackage_sets: [base, desktop]\npackages:\n  - firefox\n  - {name: openssh, repo: core}\nwindow:\n  cron: \"0 0 2 * * Sat\"\n  duration: 4h\n";

    #[test]
    fn finds_values_by_path() {
        assert_eq!(locate(DOC, &[Seg::Key("name")]), (2, 7));
        assert_eq!(
            locate(DOC, &[Seg::Key("package_sets"), Seg::Index(1)]),
            (3, 22)
        );
        assert_eq!(
            locate(
                DOC,
                &[Seg::Key("packages"), Seg::Index(1), Seg::Key("repo")]
            ),
            (6, 27)
        );
        assert_eq!(
            locate(DOC, &[Seg::Key("window"), Seg::Key("duration")]),
            (9, 13)
        );
    }

    #[test]
    fn falls_back_to_deepest_ancestor() {
        assert_eq!(locate(DOC, &[Seg::Key("packages"), Seg::Index(9)]), (5, 3));
        assert_eq!(locate(DOC, &[Seg::Key("nope")]), (1, 1));
    }

    #[test]
    fn finds_scalars() {
        assert_eq!(find_scalar(DOC, "openssh"), Some((6, 12)));
        assert_eq!(find_scalar(DOC, "absent"), None);
    }

    #[test]
    fn unparsable_text_is_line_one() {
        assert_eq!(locate("a: [", &[Seg::Key("a")]), (1, 1));
    }
}
