//! A small namespace-aware XML element tree read with quick-xml's `NsReader`, and its faithful
//! conversion to JSON for `Order.raw`.
//!
//! Conversion rules: an element without child elements and without attributes becomes its text as a
//! JSON string, exactly as sent (an empty element becomes `""`); any other element becomes an object
//! whose keys are the local names of its children (a name repeated becomes an array in document order),
//! `"@name"` for each attribute (namespace declarations are not data and are left out) and `"$text"` for
//! text that is not only the whitespace between child elements. Numbers stay strings: XML has no types.
//!
//! The tree is dropped, compared and converted recursively, so a document nested deeper than
//! [`MAX_DEPTH`] is refused while it is read, before any element that deep exists: a body of tens of
//! thousands of nested `<a>` (quick-xml alone reads up to 65,535 levels) would otherwise overflow the
//! stack and abort the daemon.

use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::{NsReader, XmlVersion};
use serde_json::{Map, Value};

/// How deeply elements may nest, the root being level 1. Real responses nest about ten levels (a
/// `<sale>` is at level 6 inside its envelope). The limit also keeps a `<sale>` converted to JSON
/// (an object per level, an array more where a name repeats) within serde_json's default recursion
/// limit of 128, which reading the raw payload back from the store relies on.
pub(super) const MAX_DEPTH: usize = 64;

/// Why a document is not well-formed XML (with namespaces).
#[derive(Debug, thiserror::Error)]
pub(super) enum XmlError {
    #[error("not valid UTF-8: {0}")]
    Utf8(#[from] std::str::Utf8Error),
    #[error("XML syntax: {0}")]
    Syntax(#[from] quick_xml::Error),
    #[error("XML attribute: {0}")]
    Attribute(#[from] quick_xml::events::attributes::AttrError),
    #[error("undeclared namespace prefix `{0}`")]
    UnknownPrefix(String),
    #[error("unknown entity `&{0};`")]
    UnknownEntity(String),
    #[error("the document ends inside `<{0}>` (truncated?)")]
    Truncated(String),
    #[error("no root element")]
    NoRoot,
    #[error("more than one root element")]
    SeveralRoots,
    #[error("elements nested more than {0} levels deep")]
    TooDeep(usize),
}

/// One element: its resolved namespace and local name, attributes as written, children and the text
/// directly inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Element {
    pub namespace: Option<String>,
    pub name: String,
    /// Qualified names as written, with unescaped values; `xmlns` declarations excluded.
    pub attributes: Vec<(String, String)>,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    /// The first child element with this local name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The trimmed text of the first child with this local name, when it is not empty.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name)
            .map(|c| c.text.trim())
            .filter(|t| !t.is_empty())
    }

    /// Whether this element is `{namespace}name`.
    pub fn is(&self, namespace: &str, name: &str) -> bool {
        self.name == name && self.namespace.as_deref() == Some(namespace)
    }

    /// The first child element with this local name, taken out of the element.
    pub fn into_child(self, name: &str) -> Option<Element> {
        self.children.into_iter().find(|c| c.name == name)
    }

    /// The children with this local name, in document order, taken out of the element.
    pub fn into_children_named(self, name: &str) -> impl Iterator<Item = Element> {
        self.children.into_iter().filter(move |c| c.name == name)
    }

    /// The faithful JSON form of this element (see the module documentation).
    pub fn into_json(self) -> Value {
        if self.children.is_empty() && self.attributes.is_empty() {
            return Value::String(self.text);
        }
        let mut object = Map::new();
        for (name, value) in self.attributes {
            object.insert(format!("@{name}"), Value::String(value));
        }
        for mut child in self.children {
            let name = std::mem::take(&mut child.name);
            let value = child.into_json();
            match object.get_mut(&name) {
                Some(Value::Array(values)) => values.push(value),
                Some(first) => {
                    let previous = first.take();
                    *first = Value::Array(vec![previous, value]);
                }
                None => {
                    object.insert(name, value);
                }
            }
        }
        if !self.text.trim().is_empty() {
            object.insert("$text".to_owned(), Value::String(self.text));
        }
        Value::Object(object)
    }
}

/// Parses a whole document into its root element.
pub(super) fn parse(body: &[u8]) -> Result<Element, XmlError> {
    let text = std::str::from_utf8(body)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = NsReader::from_str(text);
    let mut open: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let (namespace, event) = reader.read_resolved_event()?;
        let namespace = match namespace {
            ResolveResult::Bound(ns) => Some(ns.into_inner().to_owned()),
            ResolveResult::Unbound => None,
            ResolveResult::Unknown(prefix) => return Err(XmlError::UnknownPrefix(prefix)),
        };
        match event {
            Event::Start(start) => {
                within_depth(&open)?;
                open.push(element(namespace, &start)?);
            }
            Event::Empty(start) => {
                within_depth(&open)?;
                attach(&mut open, &mut root, element(namespace, &start)?)?;
            }
            Event::End(_) => {
                // quick-xml checks that end tags match their start tags.
                let done = open.pop().ok_or(XmlError::NoRoot)?;
                attach(&mut open, &mut root, done)?;
            }
            Event::Text(text) => {
                if let Some(current) = open.last_mut() {
                    current.text.push_str(&text.xml10_content());
                }
            }
            Event::CData(data) => {
                if let Some(current) = open.last_mut() {
                    current.text.push_str(&data.xml10_content());
                }
            }
            Event::GeneralRef(reference) => {
                let resolved = resolve_reference(&reference)?;
                if let Some(current) = open.last_mut() {
                    current.text.push_str(&resolved);
                }
            }
            Event::Eof => break,
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if let Some(unclosed) = open.last() {
        return Err(XmlError::Truncated(unclosed.name.clone()));
    }
    root.ok_or(XmlError::NoRoot)
}

/// Whether one more element may open inside the `open` ones.
fn within_depth(open: &[Element]) -> Result<(), XmlError> {
    if open.len() >= MAX_DEPTH {
        return Err(XmlError::TooDeep(MAX_DEPTH));
    }
    Ok(())
}

fn element(namespace: Option<String>, start: &BytesStart<'_>) -> Result<Element, XmlError> {
    let name = start.local_name().into_inner().to_owned();
    let mut attributes = Vec::new();
    for attribute in start.attributes() {
        let attribute = attribute?;
        let key = attribute.key.as_ref().to_owned();
        if key == "xmlns" || key.starts_with("xmlns:") {
            continue;
        }
        attributes.push((
            key,
            attribute
                .normalized_value(XmlVersion::Implicit1_0)?
                .into_owned(),
        ));
    }
    Ok(Element {
        namespace,
        name,
        attributes,
        children: Vec::new(),
        text: String::new(),
    })
}

fn attach(open: &mut [Element], root: &mut Option<Element>, done: Element) -> Result<(), XmlError> {
    match open.last_mut() {
        Some(parent) => parent.children.push(done),
        None if root.is_none() => *root = Some(done),
        None => return Err(XmlError::SeveralRoots),
    }
    Ok(())
}

/// The text a reference stands for: a character reference or one of XML's five predefined entities
/// (SOAP forbids a DTD, so no other entity can be declared).
fn resolve_reference(reference: &BytesRef<'_>) -> Result<String, XmlError> {
    if let Some(c) = reference.resolve_char_ref()? {
        return Ok(c.to_string());
    }
    let name = reference.xml10_content();
    resolve_predefined_entity(&name)
        .map(str::to_owned)
        .ok_or_else(|| XmlError::UnknownEntity(name.into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn converts_elements_faithfully() {
        let doc = r#"<a xmlns:x="urn:x"><b>1</b><b>2</b><c/><d x:k="v &amp; w">t</d><e>  </e>
            <f><g>Çığ &#x130;şöü &lt;&gt;</g></f></a>"#;
        let root = parse(doc.as_bytes()).unwrap();
        assert_eq!(
            root.into_json(),
            json!({
                "b": ["1", "2"],
                "c": "",
                "d": {"@x:k": "v & w", "$text": "t"},
                "e": "  ",
                "f": {"g": "Çığ İşöü <>"}
            })
        );
    }

    #[test]
    fn resolves_namespaces_whatever_the_prefix() {
        let root = parse(br#"<p:r xmlns:p="urn:one"><q:s xmlns:q="urn:one"/><t/></p:r>"#).unwrap();
        assert!(root.is("urn:one", "r"));
        assert!(root.children[0].is("urn:one", "s"));
        assert_eq!(root.children[1].namespace, None);
    }

    #[test]
    fn bad_documents_are_errors() {
        for doc in [
            &b"<a><b></a>"[..],
            b"<a><b>",
            b"",
            b"<a/><b/>",
            b"<p:a/>",
            b"<a>&nbsp;</a>",
            b"<a>\xff</a>",
            b"<a attr=noquotes/>",
        ] {
            assert!(parse(doc).is_err(), "{}", String::from_utf8_lossy(doc));
        }
    }

    /// `depth` nested `<a>`, the innermost empty or (`self_closing`) written `<a/>`.
    fn nested(depth: usize, self_closing: bool) -> String {
        if self_closing {
            format!(
                "{}<a/>{}",
                "<a>".repeat(depth - 1),
                "</a>".repeat(depth - 1)
            )
        } else {
            format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth))
        }
    }

    #[test]
    fn refuses_nesting_deeper_than_the_limit_without_overflowing_the_stack() {
        // quick-xml itself stops at 65,535 levels; below that, an unlimited tree would be built and
        // then overflow the stack when dropped or converted.
        for depth in [60_000, 100_000] {
            for self_closing in [false, true] {
                let error = parse(nested(depth, self_closing).as_bytes()).unwrap_err();
                assert!(matches!(error, XmlError::TooDeep(MAX_DEPTH)), "{error:?}");
                assert_eq!(
                    error.to_string(),
                    format!("elements nested more than {MAX_DEPTH} levels deep")
                );
            }
        }
        for self_closing in [false, true] {
            assert!(matches!(
                parse(nested(MAX_DEPTH + 1, self_closing).as_bytes()),
                Err(XmlError::TooDeep(_))
            ));
            let deepest = parse(nested(MAX_DEPTH, self_closing).as_bytes()).unwrap();
            assert!(deepest.into_json().is_object());
        }
        // Deep and unclosed: refused for its depth, not read to the end.
        assert!(matches!(
            parse("<a>".repeat(60_000).as_bytes()),
            Err(XmlError::TooDeep(_))
        ));
    }
}
