//! A batch of output in parts, written with vectored writes: the frames
//! in the writer's buffer, and between them large byte-stream chunks that
//! were never copied there (`Protocol::out_chunks`).

use tokio::io::AsyncWrite;

/// One write of what is left: a plain write while one part is, a vectored
/// one otherwise (the slices are made on the stack inside each poll, so the
/// future stays small: it is made for every batch).
pub(super) fn write_some<'a, W: AsyncWrite + Unpin + ?Sized>(
    writer: &'a mut W,
    left: &'a Remaining<'_>,
) -> impl std::future::Future<Output = std::io::Result<usize>> + 'a {
    std::future::poll_fn(move |cx| {
        let writer = std::pin::Pin::new(&mut *writer);
        match left.single() {
            Some(part) => writer.poll_write(cx, part),
            None => {
                let (slices, count) = left.slices();
                writer.poll_write_vectored(cx, &slices[..count])
            }
        }
    })
}

/// Parts given to one vectored write at most.
const MAX_SLICES: usize = 16;

/// What is left of a batch in parts: from byte `offset` of part `at`.
pub(super) struct Remaining<'a> {
    parts: &'a [&'a [u8]],
    at: usize,
    offset: usize,
}

impl<'a> Remaining<'a> {
    pub(super) fn new(parts: &'a [&'a [u8]]) -> Self {
        Remaining { parts, at: 0, offset: 0 }
    }

    /// What is left, if it is all in one part.
    #[inline]
    fn single(&self) -> Option<&'a [u8]> {
        match &self.parts[self.at..] {
            [one] => Some(&one[self.offset..]),
            _ => None,
        }
    }

    /// The parts left, up to [`MAX_SLICES`] at once (the first one partly),
    /// on the stack: no allocation per write.
    pub(super) fn slices(&self) -> ([std::io::IoSlice<'a>; MAX_SLICES], usize) {
        let mut slices = [std::io::IoSlice::new(&[]); MAX_SLICES];
        let mut count = 0;
        for (i, part) in self.parts[self.at..].iter().enumerate() {
            let part = if i == 0 { &part[self.offset..] } else { part };
            if !part.is_empty() {
                slices[count] = std::io::IoSlice::new(part);
                count += 1;
                if count == MAX_SLICES {
                    break;
                }
            }
        }
        (slices, count)
    }

    pub(super) fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let left = self.parts[self.at].len() - self.offset;
            if n < left {
                self.offset += n;
                return;
            }
            n -= left;
            self.at += 1;
            self.offset = 0;
        }
        while self.at < self.parts.len() && self.parts[self.at].len() == self.offset {
            self.at += 1;
            self.offset = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes the slices of `left` show, joined.
    fn shown(left: &Remaining<'_>) -> Vec<u8> {
        let (slices, count) = left.slices();
        slices[..count].iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn writes_of_any_size_go_through_the_parts_in_order() {
        let parts: Vec<Vec<u8>> =
            vec![b"head".to_vec(), Vec::new(), vec![7; 10], b"x".to_vec(), Vec::new(), b"tail".to_vec()];
        let refs: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
        let whole: Vec<u8> = parts.concat();
        for step in 1..=whole.len() {
            let mut left = Remaining::new(&refs);
            let mut done = 0;
            while done < whole.len() {
                assert_eq!(shown(&left), whole[done..].to_vec(), "step {step} at {done}");
                let n = step.min(whole.len() - done);
                left.advance(n);
                done += n;
            }
            assert_eq!(shown(&left), Vec::<u8>::new());
        }
    }

    #[test]
    fn at_most_max_slices_at_once() {
        let parts: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 3]).collect();
        let refs: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
        let mut left = Remaining::new(&refs);
        let (_, count) = left.slices();
        assert_eq!(count, MAX_SLICES);
        left.advance(3 * MAX_SLICES + 1);
        assert_eq!(shown(&left)[..2], [MAX_SLICES as u8, MAX_SLICES as u8]);
    }
}
