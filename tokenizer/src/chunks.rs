//! Content-defined cut points that pre-tokenization never crosses.
//!
//! A cut goes before a single space between two non-whitespace characters, at the first such
//! space at least `chunk_bytes` after the previous cut. Byte-level BPE pre-tokenizers (GPT-2's
//! and Llama-3's split patterns) always end a pre-token before such a space and start the next
//! one with it, and a Metaspace pre-tokenizer turns it into the chunk's leading `▁`; so the
//! chunks encode, one by one, to the ids of the whole text. Where a tokenizer breaks that rule
//! the load-time probe notices and encoding falls back to whole texts.
//!
//! The cuts depend only on the text since the previous cut, so two prompts sharing a prefix
//! share their chunks up to the chunk where they differ.

/// Iterator over the chunks of a text.
pub(crate) struct Chunks<'a> {
    text: &'a str,
    chunk_bytes: usize,
}

impl<'a> Chunks<'a> {
    pub(crate) fn new(text: &'a str, chunk_bytes: usize) -> Self {
        Chunks {
            text,
            chunk_bytes: chunk_bytes.max(1),
        }
    }
}

/// Position of the first cut at or after `from` in `text`, if any.
fn next_cut(text: &str, from: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = from.max(1);
    while i + 1 < bytes.len() {
        let offset = bytes[i..bytes.len() - 1].iter().position(|&b| b == b' ')?;
        i += offset;
        // A space byte is always a whole character in UTF-8, so both neighbours are whole
        // characters too.
        let before = text[..i].chars().next_back();
        let after = text[i + 1..].chars().next();
        if before.is_some_and(|c| !c.is_whitespace()) && after.is_some_and(|c| !c.is_whitespace()) {
            return Some(i);
        }
        i += 1;
    }
    None
}

impl<'a> Iterator for Chunks<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.text.is_empty() {
            return None;
        }
        let (chunk, rest) = match next_cut(self.text, self.chunk_bytes) {
            Some(cut) => self.text.split_at(cut),
            None => (self.text, ""),
        };
        self.text = rest;
        Some(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(text: &str, bytes: usize) -> Vec<&str> {
        Chunks::new(text, bytes).collect()
    }

    #[test]
    fn cuts_go_before_single_spaces_between_words() {
        assert_eq!(
            chunks("aaaa bbbb cccc", 4),
            ["aaaa", " bbbb", " cccc"],
            "at the first space at or after the size"
        );
        assert_eq!(chunks("aaaa bbbb cccc", 6), ["aaaa bbbb", " cccc"]);
        assert_eq!(chunks("aaaa  bbbb\n cccc", 1), ["aaaa  bbbb\n cccc"]);
        assert_eq!(chunks("é é é", 1), ["é", " é", " é"]);
        assert_eq!(chunks("a ", 1), ["a "], "no cut before a final space");
        assert!(chunks("", 4).is_empty());
    }

    #[test]
    fn chunks_cover_the_text_and_follow_its_content() {
        let text = "one two  three\tfour\n five ünï cödé 🙂 six seven eight nine ten";
        for bytes in [1, 3, 8, 16, 100] {
            assert_eq!(chunks(text, bytes).concat(), text);
        }
        let longer = format!("{text} eleven twelve");
        let (a, b) = (chunks(text, 8), chunks(&longer, 8));
        assert_eq!(
            a[..a.len() - 1],
            b[..a.len() - 1],
            "a shared prefix shares chunks"
        );
    }
}
