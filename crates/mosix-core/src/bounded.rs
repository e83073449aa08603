//! Lists read from the wire that cannot make the reader allocate past their named limit.
//!
//! serde collects a sequence into a `Vec` as long as the sender announces, and only `validate`
//! looks at the length afterwards: a peer could make a node allocate many times the frame it
//! sent (a 16 MiB image frame of empty CPU-flag strings is half a gigabyte of `String`s). A
//! field read with [`seq`] keeps at most one element more than its limit and reads the rest
//! only to drop it, so the message stays aligned and `validate` still refuses it for being
//! over the limit, and memory stays bounded by the limit, not by the sender.
//!
//! The error cannot be raised while decoding instead: postcard drops the text of serde's custom
//! errors, and the refusal would no longer say what was wrong.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{Deserializer, SeqAccess, Visitor};

/// The most bytes a sequence reserves in advance from what the sender announces (as serde's
/// own cautious size hint).
const PREALLOC_BYTES: usize = 64 * 1024;

/// Reads a sequence (serialised as a plain `Vec<T>`) keeping at most `MAX + 1` elements: the
/// caller's `validate` refuses a list longer than `MAX`. Use it as
/// `#[serde(deserialize_with = "crate::bounded::seq::<_, _, MAX>")]`.
pub(crate) fn seq<'de, D, T, const MAX: usize>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    d.deserialize_seq(Kept::<T, MAX>(PhantomData))
}

struct Kept<T, const MAX: usize>(PhantomData<T>);

impl<'de, T: Deserialize<'de>, const MAX: usize> Visitor<'de> for Kept<T, MAX> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a sequence of at most {MAX} elements")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let keep = MAX.saturating_add(1);
        let reserve = seq
            .size_hint()
            .unwrap_or(0)
            .min(keep)
            .min(PREALLOC_BYTES / std::mem::size_of::<T>().max(1));
        let mut v = Vec::with_capacity(reserve);
        while let Some(x) = seq.next_element::<T>()? {
            if v.len() < keep {
                v.push(x);
            }
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Msg {
        #[serde(deserialize_with = "super::seq::<_, _, 3>")]
        list: Vec<String>,
        after: u32,
    }

    fn decode(list: usize) -> Msg {
        let m = Msg {
            list: (0..list).map(|i| i.to_string()).collect(),
            after: 77,
        };
        let bytes = postcard::to_stdvec(&m).unwrap();
        let back: Msg = postcard::from_bytes(&bytes).unwrap();
        if list <= 3 {
            assert_eq!(back, m, "a list within the limit reads back whole");
        }
        back
    }

    #[test]
    fn a_list_over_the_limit_keeps_one_more_and_stays_aligned() {
        assert_eq!(decode(0).list.len(), 0);
        assert_eq!(decode(3).list.len(), 3);
        let over = decode(1000);
        assert_eq!(over.list, ["0", "1", "2", "3"]);
        assert_eq!(
            over.after, 77,
            "the fields after the list are read where they are"
        );
    }
}
