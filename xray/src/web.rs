//! The X-ray web page that `kplane up` serves. (Being written.)
