//! Attribute paths with a value filter, as PATCH operations and
//! Synchronize's mapping rules write them: `[URN ":"] name ["." sub]` or
//! `[URN ":"] name "[" filter "]" ["." sub]`, parsed with the filter
//! grammar's own pieces.

use projections::directory::filter::{AttrPath, Filter};

use super::filter::{attribute_path, parse_filter};
use crate::error::{Error, InvalidKind};

/// A PATCH path, parsed: `[URN ":"] name ["." sub]` or
/// `[URN ":"] name "[" filter "]" ["." sub]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    pub schema: Option<String>,
    pub name: String,
    pub filter: Option<Filter>,
    pub sub_attribute: Option<String>,
}

/// Parses a path with the filter parser's own pieces: `attribute_path` for
/// the names, `parse_filter` for what is between the brackets.
pub fn parse_patch_path(text: &str) -> Result<PatchPath, Error> {
    let text = text.trim();
    let invalid = |detail: &str| {
        Error::invalid_as(InvalidKind::Path, format!("'{text}' is not a valid path: {detail}"))
    };
    let Some(open) = text.find('[') else {
        let path = attribute_path(text).map_err(|message| invalid(&message))?;
        return Ok(PatchPath {
            schema: path.schema,
            name: path.name,
            filter: None,
            sub_attribute: path.sub_attribute,
        });
    };
    // The last `]` closes the filter: only a sub-attribute name may follow
    // it, and a `]` inside a quoted string comes before it.
    let close = text
        .rfind(']')
        .filter(|close| *close > open)
        .ok_or_else(|| invalid("'[' is not closed"))?;
    let attribute = text.get(..open).unwrap_or_default();
    let inner = text.get(open + 1..close).unwrap_or_default();
    let after = text.get(close + 1..).unwrap_or_default();
    let path = attribute_path(attribute).map_err(|message| invalid(&message))?;
    if path.sub_attribute.is_some() {
        return Err(invalid(
            "a value filter follows a multi-valued attribute, not a sub-attribute",
        ));
    }
    let filter = parse_filter(inner).map_err(|error| invalid(&error.to_string()))?;
    let sub_attribute = match after {
        "" => None,
        after => {
            let name = after
                .strip_prefix('.')
                .ok_or_else(|| invalid(&format!("'{after}' cannot follow a value filter")))?;
            match attribute_path(name) {
                Ok(AttrPath { schema: None, name, sub_attribute: None }) => Some(name),
                _ => return Err(invalid(&format!("'{name}' is not a sub-attribute name"))),
            }
        }
    };
    Ok(PatchPath { schema: path.schema, name: path.name, filter: Some(filter), sub_attribute })
}
