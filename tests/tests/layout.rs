//! The shape of the source tree, checked like behaviour (issue #11): no import circle
//! between files, no source file over 600 lines, and the connection code kept free of the
//! plugin wire types. A layout that drifts back is a failing test, not a review comment.
//!
//! # How circles are counted
//! Per crate (the broker, the SDK, the proto crate, every example), a file is a node and
//! there is an edge A -> B when A names something B *defines*: by a `use` line (braces
//! expanded, `pub use` included) or by an inline path (`crate::x::f(...)`, `super::Y`).
//! A name re-exported by a `pub use` is followed to the file that defines it, so a
//! folder's `mod.rs` that only declares and re-exports its children is no node on the
//! way. A `use super::*` counts as an edge to the parent file. Test modules (from a
//! top-level `#[cfg(test)]` on) are not read. A circle is a strongly connected group of
//! two or more files; the test prints every edge of each, with the names that make it.
//!
//! Run `cargo test -p tandem-tests --test layout -- --nocapture` to see the counts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest source file allowed outside tests and generated code.
const MAX_LINES: usize = 600;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// The `src/` directories of the crates whose layout is held: the broker, the SDK, the
/// proto crate and every example plugin written in Rust.
fn crate_sources() -> Vec<PathBuf> {
    let root = repo();
    let mut dirs = vec![
        root.join("broker/src"),
        root.join("sdk-rust/src"),
        root.join("proto/src"),
    ];
    let mut examples: Vec<PathBuf> = std::fs::read_dir(root.join("examples"))
        .expect("examples/")
        .filter_map(|e| e.ok().map(|e| e.path().join("src")))
        .filter(|p| p.join("main.rs").is_file() || p.join("lib.rs").is_file())
        .collect();
    examples.sort();
    dirs.extend(examples);
    dirs
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A test-only file: `tests.rs`, or anything under a `tests/` folder.
fn is_test_file(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == "tests.rs")
        || path.components().any(|c| c.as_os_str() == "tests")
}

/// One file of a crate: its module path and what its text says.
struct Module {
    file: PathBuf,
    path: Vec<String>,
    /// Names defined at the top level (items and `mod` declarations).
    defines: BTreeSet<String>,
    /// Top-level `use` items: the name they bring in, and the absolute path it stands for.
    uses: Vec<(String, Vec<String>)>,
    /// Every absolute path the file names (from its `use` lines and inline paths).
    named: Vec<Vec<String>>,
    /// The file's code lines, searched for inline paths into its child modules
    /// (`child::f(...)`), which need the module tree to be recognised.
    children_named: Vec<String>,
}

/// The module path of `file` under the crate's `src`: `lib.rs`/`main.rs` are the root,
/// `a/mod.rs` and `a.rs` are `a`, `a/b.rs` is `a::b`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_owned());
    }
    parts
}

/// The text before the first top-level `#[cfg(test)]`, without comments.
fn code(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            continue;
        }
        let line = match line.find("//") {
            // A `//` inside a string (a URL) keeps the line whole; good enough here.
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        lines.push(line.to_owned());
    }
    lines
}

const ITEM_KEYWORDS: [&str; 10] = [
    "struct", "enum", "fn", "trait", "type", "const", "static", "mod", "union", "async",
];

/// The name a top-level item line defines, if it is one.
fn defined_name(line: &str) -> Option<String> {
    if line.starts_with(' ') || line.starts_with('\t') {
        return None;
    }
    let mut words = line
        .split(|c: char| c.is_whitespace() || c == '(' || c == '<' || c == ':' || c == '{')
        .filter(|w| !w.is_empty())
        .peekable();
    // Skip visibility and qualifiers.
    while let Some(w) = words.peek() {
        if w.starts_with("pub") || matches!(*w, "crate)" | "super)" | "unsafe" | "extern") {
            words.next();
        } else {
            break;
        }
    }
    let mut keyword = words.next()?;
    if keyword == "async" {
        keyword = words.next()?;
    }
    if keyword == "macro_rules!" {
        return words.next().map(|n| n.trim_end_matches('!').to_owned());
    }
    if !ITEM_KEYWORDS.contains(&keyword) {
        return None;
    }
    let name = words.next()?;
    let name: String = name
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// Expands one `use` tree (`a::{b, c::{d as e}, self}`) into (name, path) pairs.
fn expand_use(tree: &str, prefix: &[String], out: &mut Vec<(String, Vec<String>)>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head = tree[..open].trim_end_matches("::");
        let mut base = prefix.to_vec();
        base.extend(
            head.split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand_use(&inner[start..i], &base, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand_use(&inner[start..], &base, out);
        return;
    }
    if tree.is_empty() {
        return;
    }
    let (path, alias) = match tree.split_once(" as ") {
        Some((p, a)) => (p.trim(), Some(a.trim())),
        None => (tree, None),
    };
    let mut full = prefix.to_vec();
    full.extend(path.split("::").map(|s| s.trim().to_owned()));
    if full.last().is_some_and(|l| l == "self") {
        full.pop();
    }
    let name = alias
        .map(str::to_owned)
        .or_else(|| full.last().cloned())
        .unwrap_or_default();
    out.push((name, full));
}

/// Makes a path absolute (from the crate root) as seen from module `at`; `None` for a
/// path into another crate.
fn absolute(path: &[String], at: &[String], children: &BTreeSet<String>) -> Option<Vec<String>> {
    let first = path.first()?;
    let mut base: Vec<String> = match first.as_str() {
        "crate" => Vec::new(),
        "self" => at.to_vec(),
        "super" => at[..at.len().saturating_sub(1)].to_vec(),
        name if children.contains(name) => {
            let mut b = at.to_vec();
            b.push(name.to_owned());
            return Some(b.into_iter().chain(path[1..].iter().cloned()).collect());
        }
        _ => return None,
    };
    let mut rest = &path[1..];
    while rest.first().is_some_and(|s| s == "super") {
        base.pop();
        rest = &rest[1..];
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// Every `crate::`, `super::` and `self::` path written inline in `line`.
fn inline_paths(line: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes = line.as_bytes();
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(i) = line[from..].find(start) {
            let at = from + i;
            from = at + start.len();
            let boundary = at == 0
                || !(bytes[at - 1].is_ascii_alphanumeric()
                    || bytes[at - 1] == b'_'
                    || bytes[at - 1] == b':');
            if !boundary {
                continue;
            }
            let segment: String = line[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let parts: Vec<String> = segment
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            if parts.len() > 1 {
                found.push(parts);
            }
        }
    }
    found
}

fn read_module(src: &Path, file: &Path) -> Module {
    let text = std::fs::read_to_string(file).expect("source file");
    let path = module_path(src, file);
    let lines = code(&text);
    let defines: BTreeSet<String> = lines.iter().filter_map(|l| defined_name(l)).collect();
    let mut module = Module {
        file: file.to_path_buf(),
        path,
        defines,
        uses: Vec::new(),
        named: Vec::new(),
        children_named: Vec::new(),
    };
    let mut statement: Option<String> = None;
    let mut raw_uses = Vec::new();
    for line in &lines {
        if let Some(s) = &mut statement {
            s.push(' ');
            s.push_str(line.trim());
            if line.contains(';') {
                raw_uses.push(statement.take().unwrap_or_default());
            }
            continue;
        }
        let t = line.trim_start();
        let body = t
            .strip_prefix("pub(crate) use ")
            .or_else(|| t.strip_prefix("pub(super) use "))
            .or_else(|| t.strip_prefix("pub use "))
            .or_else(|| t.strip_prefix("use "));
        match body {
            Some(body) if body.contains(';') => raw_uses.push(body.to_owned()),
            Some(body) => statement = Some(body.to_owned()),
            None => module.named.extend(inline_paths(line)),
        }
    }
    module.children_named = lines.iter().map(|l| l.to_owned()).collect();
    for raw in raw_uses {
        let raw = raw.split(';').next().unwrap_or_default();
        let mut expanded = Vec::new();
        expand_use(raw, &[], &mut expanded);
        module.uses.extend(expanded);
    }
    module
}

/// One crate's file graph: edges with the names that make them.
type Graph = BTreeMap<PathBuf, BTreeMap<PathBuf, BTreeSet<String>>>;

fn crate_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.retain(|f| !is_test_file(f.strip_prefix(src).unwrap_or(f)));
    // `main.rs` beside a `lib.rs` is another crate (the binary): its own root.
    let has_lib = src.join("lib.rs").is_file();
    files.retain(|f| !(has_lib && f == &src.join("main.rs")));
    let modules: Vec<Module> = files.iter().map(|f| read_module(src, f)).collect();
    let by_path: BTreeMap<Vec<String>, usize> = modules
        .iter()
        .enumerate()
        .map(|(i, m)| (m.path.clone(), i))
        .collect();
    let children_of = |path: &[String]| -> BTreeSet<String> {
        by_path
            .keys()
            .filter(|p| p.len() == path.len() + 1 && p.starts_with(path))
            .map(|p| p[path.len()].clone())
            .collect()
    };
    // Absolute `use` paths per module, by the name they bring in.
    let uses: Vec<BTreeMap<String, Vec<String>>> = modules
        .iter()
        .map(|m| {
            let children = children_of(&m.path);
            m.uses
                .iter()
                .enumerate()
                .filter_map(|(i, (name, p))| {
                    // Globs are kept apart (`*0`, `*1`, ...): each is searched for names
                    // the file neither defines nor imports by name.
                    let key = if name == "*" {
                        format!("*{i}")
                    } else {
                        name.clone()
                    };
                    Some((key, absolute(p, &m.path, &children)?))
                })
                .collect()
        })
        .collect();

    // The file that defines what `path` names (following re-exports), and the name.
    fn resolve(
        path: &[String],
        modules: &[Module],
        by_path: &BTreeMap<Vec<String>, usize>,
        uses: &[BTreeMap<String, Vec<String>>],
        depth: usize,
    ) -> Option<(usize, String)> {
        let (len, file) = (0..=path.len())
            .rev()
            .find_map(|n| by_path.get(&path[..n]).map(|i| (n, *i)))?;
        let Some(name) = path.get(len) else {
            return Some((file, modules[file].path.last().cloned().unwrap_or_default()));
        };
        if name == "*" || modules[file].defines.contains(name) || depth > 8 {
            return Some((file, name.clone()));
        }
        match uses[file].get(name) {
            Some(target) => {
                let mut next = target.clone();
                next.extend(path[len + 1..].iter().cloned());
                resolve(&next, modules, by_path, uses, depth + 1).or(Some((file, name.clone())))
            }
            None => {
                for (key, glob) in &uses[file] {
                    if !key.starts_with('*') {
                        continue;
                    }
                    let mut next = glob[..glob.len() - 1].to_vec();
                    next.extend(path[len..].iter().cloned());
                    if let Some((f, n)) = resolve(&next, modules, by_path, uses, depth + 1)
                        && modules[f].defines.contains(&n)
                    {
                        return Some((f, n));
                    }
                }
                Some((file, name.clone()))
            }
        }
    }

    let mut graph = Graph::new();
    for (i, m) in modules.iter().enumerate() {
        let children = children_of(&m.path);
        let mut named: Vec<Vec<String>> = uses[i].values().cloned().collect();
        named.extend(
            m.named
                .iter()
                .filter_map(|p| absolute(p, &m.path, &children)),
        );
        for child in &children {
            let needle = format!("{child}::");
            for line in &m.children_named {
                let t = line.trim_start();
                if t.starts_with("use ")
                    || t.starts_with("pub use ")
                    || t.starts_with("pub(crate) use ")
                {
                    continue;
                }
                let mut from = 0;
                while let Some(i) = line[from..].find(&needle) {
                    let at = from + i;
                    from = at + needle.len();
                    let before = line[..at].chars().next_back();
                    if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                        continue;
                    }
                    let rest: String = line[from..]
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !rest.is_empty() {
                        let mut path = m.path.clone();
                        path.push(child.clone());
                        path.push(rest);
                        named.push(path);
                    }
                }
            }
        }
        for path in named {
            // A `mod` declaration's child is not a use of it; `use child::X` is.
            if let Some((target, name)) = resolve(&path, &modules, &by_path, &uses, 0)
                && target != i
            {
                graph
                    .entry(m.file.clone())
                    .or_default()
                    .entry(modules[target].file.clone())
                    .or_default()
                    .insert(name);
            }
        }
    }
    graph
}

/// Strongly connected groups of two or more files (Tarjan).
fn circles(graph: &Graph) -> Vec<Vec<PathBuf>> {
    struct State<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on_stack: BTreeSet<&'a PathBuf>,
        next: usize,
        found: Vec<Vec<PathBuf>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a PathBuf) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        if let Some(edges) = s.graph.get(v) {
            for w in edges.keys() {
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let low = s.low[v].min(s.low[w]);
                    s.low.insert(v, low);
                } else if s.on_stack.contains(w) {
                    let low = s.low[v].min(s.index[w]);
                    s.low.insert(v, low);
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut group = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                group.push(w.clone());
                if w == v {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                s.found.push(group);
            }
        }
    }
    let nodes: BTreeSet<&PathBuf> = graph
        .iter()
        .flat_map(|(a, e)| std::iter::once(a).chain(e.keys()))
        .collect();
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in nodes {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.found
}

fn short(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn no_import_circles_between_files() {
    let mut report = String::new();
    let mut count = 0;
    for src in crate_sources() {
        let graph = crate_graph(&src);
        let edges: usize = graph.values().map(BTreeMap::len).sum();
        println!(
            "{}: {} files with imports, {edges} edges",
            short(&src),
            graph.len()
        );
        for group in circles(&graph) {
            count += 1;
            report.push_str(&format!("circle {count}:\n"));
            for a in &group {
                for (b, names) in graph.get(a).into_iter().flatten() {
                    if group.contains(b) {
                        let names: Vec<&str> = names.iter().map(String::as_str).collect();
                        report.push_str(&format!(
                            "  {} -> {}: {}\n",
                            short(a),
                            short(b),
                            names.join(", ")
                        ));
                    }
                }
            }
        }
    }
    println!("{count} import circles\n{report}");
    assert_eq!(count, 0, "import circles between files:\n{report}");
}

#[test]
fn no_source_file_over_the_limit() {
    let mut long = Vec::new();
    for src in crate_sources() {
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        for file in files {
            if is_test_file(file.strip_prefix(&src).unwrap_or(&file)) {
                continue;
            }
            let lines = std::fs::read_to_string(&file)
                .expect("source file")
                .lines()
                .count();
            if lines > MAX_LINES {
                long.push(format!("{} ({lines} lines)", short(&file)));
            }
        }
    }
    assert!(
        long.is_empty(),
        "source files over {MAX_LINES} lines (split them by concern):\n{}",
        long.join("\n")
    );
}

/// The connection code speaks the broker's own types: every conversion to and from the
/// plugin wire types lives in `plugins/`, so `server/` never names `tandem_proto`.
#[test]
fn server_does_not_speak_the_plugin_wire_types() {
    let mut files = Vec::new();
    rust_files(&repo().join("broker/src/server"), &mut files);
    let offenders: Vec<String> = files
        .iter()
        .filter(|f| {
            std::fs::read_to_string(f)
                .expect("source file")
                .contains("tandem_proto")
        })
        .map(|f| short(f))
        .collect();
    assert!(
        offenders.is_empty(),
        "server/ names tandem_proto: {offenders:?}"
    );
}

/// The codec keeps wire versions behind `protocol/`: nothing in `server/` names one.
#[test]
fn server_does_not_name_a_wire_version() {
    let mut files = Vec::new();
    rust_files(&repo().join("broker/src/server"), &mut files);
    let offenders: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).expect("source file");
            code(&text)
                .iter()
                .any(|l| l.contains("v4::") || l.contains("v5::") || l.contains("protocol::v4"))
        })
        .map(|f| short(f))
        .collect();
    assert!(
        offenders.is_empty(),
        "server/ names a wire version module: {offenders:?}"
    );
}
