//! Test fixture `wrong-world`: a valid component whose world (`other:thing/x`) is none of
//! ours; an upload must be refused. Its WIT is inline on purpose.

wit_bindgen::generate!({
    inline: "
        package other:thing@1.0.0;
        world x {
            export run: func() -> u32;
        }
    ",
});

struct X;

impl Guest for X {
    fn run() -> u32 {
        42
    }
}

export!(X);
