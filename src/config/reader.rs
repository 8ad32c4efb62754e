//! Typed, span-aware access to a parsed TOML table.
//!
//! Serde's `deny_unknown_fields` stops at the first stray key and cannot say
//! where the value it rejects lives. This reader records every key the schema
//! asks for, so `finish` can report each key nobody asked for — with its
//! place and the closest known name — and every type or range error carries
//! the span of the offending value.

use std::cell::RefCell;
use std::ops::Range;

use serde_spanned::Spanned;
use toml::de::{DeTable, DeValue};

use super::diag::{did_you_mean, Diagnostics};
use super::schema::{self, Items, Kind};

/// A value with its place in the file.
pub(crate) type Value<'i> = Spanned<DeValue<'i>>;

/// One TOML table being read; `section` names it in messages (`routes[2]`),
/// `path` names its place in the schema (`routes[]`, `auth.*`).
pub(crate) struct Table<'a, 'i> {
    entries: &'a DeTable<'i>,
    span: Range<usize>,
    section: String,
    path: String,
    /// The value of this table's [`Table::variant`] key, once read.
    variant: RefCell<Option<String>>,
    asked: RefCell<Vec<&'static str>>,
}

/// What the values of a table with user-chosen keys are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MapOf {
    Tables,
    Strings,
}

impl<'a, 'i> Table<'a, 'i> {
    pub(crate) fn new(
        entries: &'a DeTable<'i>,
        span: Range<usize>,
        section: impl Into<String>,
    ) -> Self {
        let section = section.into();
        Table::at(entries, span, section.clone(), section)
    }

    fn at(entries: &'a DeTable<'i>, span: Range<usize>, section: String, path: String) -> Self {
        Table {
            entries,
            span,
            section,
            path,
            variant: RefCell::new(None),
            asked: RefCell::new(Vec::new()),
        }
    }

    /// Reads `value` as a table, or reports that it must be one.
    fn from_value(
        d: &mut Diagnostics,
        value: &'a Value<'i>,
        section: String,
        path: String,
    ) -> Option<Self> {
        match value.get_ref() {
            DeValue::Table(t) => Some(Table::at(t, value.span(), section, path)),
            other => {
                d.error(
                    value.span(),
                    format!("`{section}` must be a table, found {}", other.type_str()),
                );
                None
            }
        }
    }

    pub(crate) fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    pub(crate) fn section(&self) -> &str {
        &self.section
    }

    fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn record(&self, key: &'static str, kind: Kind) {
        schema::record(&self.path, self.variant.borrow().as_deref(), key, kind);
    }

    /// The value of `key`, marking the key as known.
    pub(crate) fn raw(&self, key: &'static str) -> Option<&'a Value<'i>> {
        self.record(key, Kind::Any);
        self.asked.borrow_mut().push(key);
        self.entries.get(key)
    }

    /// Every entry, for tables whose keys are names chosen by the user
    /// (`[upstreams.NAME]`); such tables have no unknown keys.
    pub(crate) fn entries(
        &self,
        values: MapOf,
    ) -> impl Iterator<Item = (Spanned<&'a str>, &'a Value<'i>)> {
        schema::record_map(&self.path, values);
        self.entries
            .iter()
            .map(|(k, v)| (Spanned::new(k.span(), k.get_ref().as_ref()), v))
    }

    /// The table `value` of this table's user-named entry `name`
    /// (`[auth.NAME]`), or the error that it must be a table.
    pub(crate) fn entry_table(
        &self,
        d: &mut Diagnostics,
        name: &str,
        value: &'a Value<'i>,
    ) -> Option<Self> {
        Table::from_value(
            d,
            value,
            format!("{}.{name}", self.section),
            self.child_path("*"),
        )
    }

    /// Element `index` of this table's array `key` as a table, named
    /// `section` in messages.
    pub(crate) fn item_table(
        &self,
        d: &mut Diagnostics,
        key: &'static str,
        value: &'a Value<'i>,
        section: String,
    ) -> Option<Self> {
        Table::from_value(d, value, section, self.child_path(&format!("{key}[]")))
    }

    /// Like [`Table::string`], for the key whose value decides which other
    /// keys the table may hold (`kind = "jwt"`).
    pub(crate) fn variant(
        &self,
        d: &mut Diagnostics,
        key: &'static str,
        choices: &'static [&'static str],
    ) -> Option<Spanned<String>> {
        let value = self.string(d, key);
        self.record(key, Kind::Variant(choices));
        if let Some(v) = &value {
            schema::record_variant(&self.path, key, v.get_ref());
            *self.variant.borrow_mut() = Some(v.get_ref().clone());
        }
        value
    }

    fn type_error(&self, d: &mut Diagnostics, key: &str, value: &Value<'_>, expected: &str) {
        d.error(
            value.span(),
            format!(
                "`{key}` in [{}] must be {expected}, found {}",
                self.section,
                value.get_ref().type_str()
            ),
        );
    }

    pub(crate) fn string(&self, d: &mut Diagnostics, key: &'static str) -> Option<Spanned<String>> {
        self.record(key, Kind::String);
        let value = self.raw(key)?;
        match value.get_ref() {
            DeValue::String(s) => Some(Spanned::new(value.span(), s.to_string())),
            _ => {
                self.type_error(d, key, value, "a string");
                None
            }
        }
    }

    pub(crate) fn boolean(&self, d: &mut Diagnostics, key: &'static str) -> Option<bool> {
        self.record(key, Kind::Boolean);
        let value = self.raw(key)?;
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.type_error(d, key, value, "true or false");
                None
            }
        }
    }

    /// An integer within `range` (inclusive).
    pub(crate) fn integer(
        &self,
        d: &mut Diagnostics,
        key: &'static str,
        range: std::ops::RangeInclusive<u64>,
    ) -> Option<u64> {
        self.record(key, Kind::Integer(*range.start(), *range.end()));
        let value = self.raw(key)?;
        let DeValue::Integer(i) = value.get_ref() else {
            self.type_error(d, key, value, "an integer");
            return None;
        };
        match u64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) if range.contains(&n) => Some(n),
            _ => {
                d.error(
                    value.span(),
                    format!(
                        "`{key}` in [{}] must be between {} and {}",
                        self.section,
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
        }
    }

    /// One of `choices` by name (`default` when the key is absent); `None`
    /// after the error "unknown KEY `x`; use a, b or c".
    pub(crate) fn keyword<T: Copy>(
        &self,
        d: &mut Diagnostics,
        key: &'static str,
        default: T,
        choices: &[(&'static str, T)],
    ) -> Option<T> {
        let value = self.string(d, key);
        self.record(
            key,
            Kind::Keyword(choices.iter().map(|(name, _)| *name).collect()),
        );
        let Some(value) = value else {
            return Some(default);
        };
        if let Some((_, choice)) = choices.iter().find(|(name, _)| *name == value.get_ref()) {
            return Some(*choice);
        }
        let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
        let list = match names.split_last() {
            Some((last, [])) => (*last).to_string(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        d.error(
            value.span(),
            format!("unknown {key} `{}`; use {list}", value.get_ref()),
        );
        None
    }

    /// A number from 0.0 to 1.0, written as a float or an integer.
    pub(crate) fn fraction(&self, d: &mut Diagnostics, key: &'static str) -> Option<f64> {
        self.record(key, Kind::Fraction);
        let value = self.raw(key)?;
        let n = match value.get_ref() {
            DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
            DeValue::Integer(i) => i.as_str().parse::<f64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if (0.0..=1.0).contains(&n) => Some(n),
            _ => {
                d.error(
                    value.span(),
                    format!("`{key}` must be a number from 0.0 to 1.0"),
                );
                None
            }
        }
    }

    /// A duration within `range`, in the key's unit (`Duration::from_millis`
    /// for a `_ms` key, `Duration::from_secs` for `_seconds`).
    pub(crate) fn duration(
        &self,
        d: &mut Diagnostics,
        key: &'static str,
        range: std::ops::RangeInclusive<u64>,
        unit: fn(u64) -> std::time::Duration,
    ) -> Option<std::time::Duration> {
        self.integer(d, key, range).map(unit)
    }

    /// An array of strings.
    pub(crate) fn strings(
        &self,
        d: &mut Diagnostics,
        key: &'static str,
    ) -> Option<Vec<Spanned<String>>> {
        self.record(key, Kind::Array(Items::Strings));
        let value = self.raw(key)?;
        let DeValue::Array(items) = value.get_ref() else {
            self.type_error(d, key, value, "an array of strings");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items.iter() {
            match item.get_ref() {
                DeValue::String(s) => out.push(Spanned::new(item.span(), s.to_string())),
                _ => self.type_error(d, key, item, "an array of strings"),
            }
        }
        Some(out)
    }

    /// An array of `items`, each element given to the caller with its span.
    pub(crate) fn array(
        &self,
        d: &mut Diagnostics,
        key: &'static str,
        items: Items,
    ) -> Option<&'a [Value<'i>]> {
        self.record(key, Kind::Array(items));
        let value = self.raw(key)?;
        match value.get_ref() {
            DeValue::Array(items) => Some(items),
            _ => {
                self.type_error(d, key, value, "an array");
                None
            }
        }
    }

    pub(crate) fn table(&self, d: &mut Diagnostics, key: &'static str) -> Option<Table<'a, 'i>> {
        self.record(key, Kind::Table);
        let section = if self.section.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.section)
        };
        let Some(value) = self.raw(key) else {
            return schema::probe()
                .map(|empty| Table::at(empty, self.span(), section, self.child_path(key)));
        };
        Table::from_value(d, value, section, self.child_path(key))
    }

    /// An array of tables (`[[routes]]`), each named `key[index]`.
    pub(crate) fn tables(&self, d: &mut Diagnostics, key: &'static str) -> Vec<Table<'a, 'i>> {
        let path = self.child_path(&format!("{key}[]"));
        let Some(items) = self.array(d, key, Items::Tables) else {
            return schema::probe()
                .map(|empty| Table::at(empty, self.span(), format!("{key}[0]"), path))
                .into_iter()
                .collect();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| Table::from_value(d, item, format!("{key}[{i}]"), path.clone()))
            .collect()
    }

    /// Reports every key of this table that no reader asked for.
    pub(crate) fn finish(self, d: &mut Diagnostics) {
        let asked = self.asked.into_inner();
        for (key, _) in self.entries.iter() {
            let name: &str = key.get_ref().as_ref();
            if asked.contains(&name) {
                continue;
            }
            let place = if self.section.is_empty() {
                "at the top level".to_string()
            } else {
                format!("in [{}]", self.section)
            };
            let hint = match did_you_mean(name, asked.iter().copied()) {
                Some(known) => format!("; did you mean `{known}`?"),
                None => String::new(),
            };
            d.error(key.span(), format!("unknown key `{name}` {place}{hint}"));
        }
    }
}
