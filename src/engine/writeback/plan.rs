//! The plan: which WebDAV steps make Nextcloud (the mirror) hold the library's tree.
//!
//! Deletions come first (topmost paths only), then the tree in path order, so a folder's
//! MKCOL comes before what goes in it: folders, moves (a path that disappeared and one that
//! appeared with the same contents, when the chain says it was a `Rename`) and files.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::chain::{ContentId, Tree, TreeItem};
use crate::engine::mirror::Held;

/// One change to make in Nextcloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    Delete(String),
    Move { from: String, to: String },
    Mkdir(String),
    Put(String),
}

/// Whether `path` is `root` or below it.
fn within(path: &str, root: &str) -> bool {
    path == root
        || path
            .strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The topmost paths of `paths` (sorted): those with no ancestor in the list.
fn topmost(paths: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in paths {
        if out.last().is_some_and(|last| within(&p, last)) {
            continue;
        }
        out.push(p);
    }
    out
}

/// What a subtree holds, relative to its root: equal signatures mean a move.
type Signature = Vec<(String, Option<ContentId>)>;

fn relative(path: &str, root: &str) -> String {
    path[root.len()..].to_owned()
}

/// The steps that make Nextcloud (`held`) hold `tree`: deletions, then folders, moves and
/// files in path order (parents first). A path that disappeared and one that appeared with
/// the same contents are one move when `renamed` says the item got there by a `Rename`
/// (a Delete and a Put of the same bytes stay a Delete and a Put: another file).
pub(crate) fn plan(
    held: &BTreeMap<String, Held>,
    tree: &Tree,
    renamed: impl Fn(&TreeItem) -> bool,
) -> Vec<Step> {
    let kind_differs = |h: &Held, item: &TreeItem| {
        matches!(
            (h, item),
            (Held::Dir, TreeItem::File { .. }) | (Held::File(_), TreeItem::Dir { .. })
        )
    };
    let removed = topmost(
        held.iter()
            .filter(|(p, h)| tree.items.get(*p).is_none_or(|item| kind_differs(h, item)))
            .map(|(p, _)| p.clone()),
    );
    // Every path Nextcloud lacks is a possible move target, not only the topmost: a file
    // moved into a new folder is a MOVE after the folder's MKCOL.
    let added: Vec<&String> = tree
        .items
        .iter()
        .filter(|(p, item)| held.get(*p).is_none_or(|h| kind_differs(h, item)))
        .map(|(p, _)| p)
        .collect();
    let held_signature = |root: &str| -> Signature {
        held.range(root.to_owned()..)
            .take_while(|(p, _)| p.starts_with(root))
            .filter(|(p, _)| within(p, root))
            .map(|(p, h)| (relative(p, root), h.content()))
            .collect()
    };
    let tree_signature = |root: &str| -> Signature {
        tree.items
            .range(root.to_owned()..)
            .take_while(|(p, _)| p.starts_with(root))
            .filter(|(p, _)| within(p, root))
            .map(|(p, item)| {
                let content = match item {
                    TreeItem::File { content, .. } => Some(*content),
                    TreeItem::Dir { .. } => None,
                };
                (relative(p, root), content)
            })
            .collect()
    };
    let mut sources: HashMap<Signature, Vec<String>> = HashMap::new();
    for r in &removed {
        // A path the tree still has (as another kind) is replaced, not moved away.
        if !tree.items.contains_key(r) {
            sources
                .entry(held_signature(r))
                .or_default()
                .push(r.clone());
        }
    }
    let mut moves: HashMap<String, String> = HashMap::new();
    let mut moved_from = HashSet::new();
    let mut moved_to: Vec<String> = Vec::new();
    for a in added {
        if sources.values().all(Vec::is_empty) {
            break;
        }
        // A path Nextcloud holds already (as another kind) must be deleted first; a path
        // below a move's target arrives with it.
        if held.contains_key(a) || moved_to.iter().any(|to| within(a, to)) {
            continue;
        }
        let Some(candidates) = sources.get_mut(&tree_signature(a)) else {
            continue;
        };
        if candidates.is_empty() || !tree.items.get(a).is_some_and(&renamed) {
            continue;
        }
        if let Some(from) = candidates.pop() {
            moved_from.insert(from.clone());
            moved_to.push(a.clone());
            moves.insert(a.clone(), from);
        }
    }
    let mut steps: Vec<Step> = removed
        .into_iter()
        .filter(|r| !moved_from.contains(r))
        .map(Step::Delete)
        .collect();
    // In path order, so every target's parent folder exists before it is used.
    for (path, item) in &tree.items {
        if let Some(from) = moves.remove(path) {
            steps.push(Step::Move {
                from,
                to: path.clone(),
            });
            continue;
        }
        if moved_to.iter().any(|to| within(path, to)) {
            continue;
        }
        let step = match (held.get(path), item) {
            (Some(h), item) if h.same_as(item) => continue,
            (_, TreeItem::Dir { .. }) => Step::Mkdir(path.clone()),
            (_, TreeItem::File { .. }) => Step::Put(path.clone()),
        };
        steps.push(step);
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::EntryHash;

    fn file(n: u8) -> TreeItem {
        TreeItem::File {
            size: 1,
            mtime_ms: 0,
            content: ContentId([n; 32]),
            nextcloud: None,
            entry: EntryHash::default(),
        }
    }

    fn dir() -> TreeItem {
        TreeItem::Dir {
            entry: EntryHash::default(),
        }
    }

    fn tree(items: &[(&str, TreeItem)]) -> Tree {
        Tree {
            items: items
                .iter()
                .map(|(p, i)| (p.to_string(), i.clone()))
                .collect(),
        }
    }

    fn held(t: &Tree) -> BTreeMap<String, Held> {
        t.items
            .iter()
            .map(|(p, i)| (p.clone(), Held::of(i)))
            .collect()
    }

    #[test]
    fn nothing_to_do_when_nextcloud_holds_the_tree() {
        let t = tree(&[("a", dir()), ("a/x", file(1))]);
        assert!(plan(&held(&t), &t, |_| true).is_empty());
    }

    #[test]
    fn deletes_first_then_folders_moves_and_files_parents_first() {
        let before = tree(&[
            ("a", dir()),
            ("a/x", file(1)),
            ("gone", dir()),
            ("gone/y", file(2)),
            ("old.txt", file(3)),
            ("z", file(4)),
        ]);
        let after = tree(&[
            ("b", dir()),
            ("b/x", file(1)),
            ("n", dir()),
            ("n/m", dir()),
            ("n/m/moved.txt", file(3)),
            ("n/m/new.txt", file(5)),
            ("z", file(6)),
        ]);
        let steps = plan(&held(&before), &after, |_| true);
        assert_eq!(
            steps,
            vec![
                Step::Delete("gone".into()),
                Step::Move {
                    from: "a".into(),
                    to: "b".into()
                },
                Step::Mkdir("n".into()),
                Step::Mkdir("n/m".into()),
                Step::Move {
                    from: "old.txt".into(),
                    to: "n/m/moved.txt".into()
                },
                Step::Put("n/m/new.txt".into()),
                Step::Put("z".into()),
            ]
        );
    }

    #[test]
    fn a_kind_change_is_a_delete_then_an_add() {
        let before = tree(&[("p", dir()), ("p/x", file(1))]);
        let after = tree(&[("p", file(2))]);
        assert_eq!(
            plan(&held(&before), &after, |_| true),
            vec![Step::Delete("p".into()), Step::Put("p".into())]
        );
    }

    #[test]
    fn the_same_bytes_elsewhere_without_a_rename_are_a_new_file() {
        let before = tree(&[("a.txt", file(1))]);
        let after = tree(&[("b.txt", file(1))]);
        assert_eq!(
            plan(&held(&before), &after, |_| false),
            vec![Step::Delete("a.txt".into()), Step::Put("b.txt".into())]
        );
    }
}
