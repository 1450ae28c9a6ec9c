//! A deterministic stand-in for a BPE tokenizer: cheap, stable within a build, and close to
//! Llama-3's ~4 characters per English token, so prompt lengths, KV usage and prefix-cache blocks
//! behave like the real model's.
//!
//! Pieces, scanning left to right:
//! - a word: an optional single leading space, then up to 5 ASCII letters (longer words split);
//! - a number: an optional single leading space, then up to 3 digits (Llama-3 splits digits so);
//! - a special token `<|name|>` (chat template markers) as one piece;
//! - any other character (punctuation, newline, other whitespace, non-ASCII) as one piece.
//!
//! A piece's id is a hash of its bytes mapped into Llama-3's 128,000 regular ids (special
//! tokens into the 256 ids above). Equal text always gives equal ids, which is all the prefix
//! cache and routers need.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

pub const VOCAB_SIZE: u32 = 128_256;
const REGULAR_IDS: u32 = 128_000;
const MAX_LETTERS: usize = 5;
const MAX_DIGITS: usize = 3;
const MAX_SPECIAL_LEN: usize = 40;

/// Appends the ids of `text`'s tokens to `ids`.
pub fn tokenize_into(text: &str, ids: &mut Vec<u32>) {
    ids.extend(Pieces::new(text).map(token_id));
}

pub fn tokenize(text: &str) -> Vec<u32> {
    let mut ids = Vec::with_capacity(text.len() / 3 + 1);
    tokenize_into(text, &mut ids);
    ids
}

/// The pieces of `text`, for `/tokenize`'s `token_strs`.
pub fn pieces(text: &str) -> impl Iterator<Item = &str> {
    Pieces::new(text)
}

pub fn token_id(piece: &str) -> u32 {
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(piece.as_bytes());
    if is_special(piece) {
        REGULAR_IDS + (hash % u64::from(VOCAB_SIZE - REGULAR_IDS)) as u32
    } else {
        (hash % u64::from(REGULAR_IDS)) as u32
    }
}

fn is_special(piece: &str) -> bool {
    piece.len() > 4 && piece.starts_with("<|") && piece.ends_with("|>")
}

struct Pieces<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Pieces<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, pos: 0 }
    }

    /// Length of the piece starting at `start`.
    fn piece_len(&self, start: usize) -> usize {
        let bytes = &self.text.as_bytes()[start..];
        let first = bytes[0];
        if first == b'<' && bytes.get(1) == Some(&b'|') {
            if let Some(len) = special_len(bytes) {
                return len;
            }
        }
        let (lead, body) = match (first, bytes.get(1)) {
            (b' ', Some(next)) if next.is_ascii_alphanumeric() => (1, &bytes[1..]),
            _ => (0, bytes),
        };
        let run = |max: usize, class: fn(&u8) -> bool| {
            body.iter().take(max).take_while(|b| class(b)).count()
        };
        let word = match body[0] {
            b if b.is_ascii_alphabetic() => run(MAX_LETTERS, u8::is_ascii_alphabetic),
            b if b.is_ascii_digit() => run(MAX_DIGITS, u8::is_ascii_digit),
            _ => 0,
        };
        if word > 0 {
            return lead + word;
        }
        // One character, however many bytes it takes in UTF-8.
        self.text[start..].chars().next().map_or(1, char::len_utf8)
    }
}

/// Length of a `<|name|>` marker at the start of `bytes`, if there is one.
fn special_len(bytes: &[u8]) -> Option<usize> {
    let name = &bytes[2..bytes.len().min(MAX_SPECIAL_LEN)];
    let end = name
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_'))?;
    (end > 0 && name[end..].starts_with(b"|>")).then_some(2 + end + 2)
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.pos >= self.text.len() {
            return None;
        }
        let start = self.pos;
        self.pos += self.piece_len(start);
        Some(&self.text[start..self.pos])
    }
}

/// Words the simulated model "generates"; each is exactly one token of the tokenizer above, so
/// a client sending a completion back in a later turn gets the same token count.
pub const OUTPUT_WORDS: [&str; 32] = [
    " the", " model", " cache", " token", " of", " and", " to", " in", " is", " that", " it",
    " for", " on", " with", " as", " was", " at", " by", " this", " from", " batch", " an", " be",
    " are", " or", " have", " not", " but", " all", " can", " more", " data",
];

/// The text of the `index`-th generated token of a request with this `seed`.
pub fn output_token(seed: u64, index: u32) -> &'static str {
    OUTPUT_WORDS[output_word(seed, index)]
}

/// Which of [`OUTPUT_WORDS`] is the `index`-th generated token of a request with this `seed`.
pub fn output_word(seed: u64, index: u32) -> usize {
    let mixed = seed.wrapping_add(u64::from(index).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    ((mixed ^ (mixed >> 29)) % OUTPUT_WORDS.len() as u64) as usize
}

/// The id of the `index`-th generated token (for hashing output blocks into the prefix cache).
pub fn output_token_id(seed: u64, index: u32) -> u32 {
    token_id(output_token(seed, index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_words_numbers_punctuation_and_specials() {
        let pieces: Vec<&str> = pieces("Hello, wonderful world 12345!\n<|eot_id|>é").collect();
        assert_eq!(
            pieces,
            [
                "Hello",
                ",",
                " wonde",
                "rful",
                " world",
                " 123",
                "45",
                "!",
                "\n",
                "<|eot_id|>",
                "é"
            ]
        );
    }

    #[test]
    fn pieces_cover_the_text_exactly() {
        let text = "  odd   spacing\t<|not special and <|x|> ünïcödé 🙂 end";
        assert_eq!(pieces(text).collect::<String>(), text);
    }

    #[test]
    fn ids_are_deterministic_and_in_vocabulary() {
        let a = tokenize("The same text twice.");
        assert_eq!(a, tokenize("The same text twice."));
        assert!(a.iter().all(|&id| id < REGULAR_IDS));
        let special = token_id("<|begin_of_text|>");
        assert!((REGULAR_IDS..VOCAB_SIZE).contains(&special));
    }

    #[test]
    fn english_averages_about_four_characters_per_token() {
        let text = "Prefix caching lets a model server skip the prefill of a prompt whose \
                    beginning it has already seen, which lowers the time to first token and \
                    frees compute for other requests. Routers that know where a prefix lives \
                    can send each request to the pod that holds it.";
        let chars_per_token = text.len() as f64 / tokenize(text).len() as f64;
        assert!((3.5..=4.8).contains(&chars_per_token), "{chars_per_token}");
    }

    #[test]
    fn every_output_word_is_one_token() {
        for word in OUTPUT_WORDS {
            assert_eq!(pieces(word).count(), 1, "{word:?}");
        }
    }
}
