//! Differential test of `wsgate::envelope::parse_command` (a hand-written single-pass parser)
//! against the serde_json implementation it replaced, kept verbatim as the oracle (in
//! `tests/support/envelope_oracle.rs`, shared with the `envelope` fuzz target): a corpus
//! of edge cases, deep nesting, and a few hundred thousand seeded pseudo-random mutations of
//! valid commands. The whole outcome is compared: the command, every string (borrowed from where
//! in the text, or owned) and the `data` slice, or the exact error. Also proves the parser does
//! not allocate unless a string it returns has escapes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use wsgate::envelope::{EnvelopeError, INLINE_DEPTH, parse_command};

#[path = "support/envelope_oracle.rs"]
mod envelope_oracle;

use envelope_oracle::{Outcome, new_outcome, oracle_outcome};

/// Asserts both implementations agree on `text`; returns the outcome.
#[track_caller]
fn same(text: &str) -> Outcome {
    let want = oracle_outcome(text);
    let got = new_outcome(text);
    assert_eq!(got, want, "input: {text:?}");
    got
}

const ACTIONS: &[&str] = &["authenticate", "refresh", "join", "leave", "send", "dance"];

/// Hand-written edge cases; each is also tried as `data`, as the value of every member and of an
/// unknown one, and wrapped in whitespace.
const VALUES: &[&str] = &[
    // Literals.
    "null",
    "true",
    "false",
    "nul",
    "nulll",
    "tru",
    "True",
    "NULL",
    "fals",
    "nan",
    "NaN",
    "Infinity",
    "-Infinity",
    "undefined",
    // Numbers.
    "0",
    "-0",
    "-0.0",
    "1",
    "-1",
    "01",
    "-01",
    "00",
    "1.",
    "1.5",
    ".5",
    "-.5",
    "1e5",
    "1E5",
    "1e+5",
    "1e-5",
    "1e",
    "1e+",
    "1e-",
    "1.e5",
    "1.5e",
    "1.5E-07",
    "0e0",
    "0.0e-0",
    "-",
    "+1",
    "--1",
    "1-",
    "1.2.3",
    "1e5e5",
    "0x10",
    "123456789012345678901234567890",
    "1e999",
    "-1e-999",
    "2.2250738585072011e-308",
    // Strings.
    r#""""#,
    r#""plain""#,
    r#""send""#,
    r#""room.1""#,
    r#""with space""#,
    r#""caf\u00e9""#,
    "\"caf\u{e9}\"",
    "\"\u{1f600}\"",
    r#""\ud83d\ude00""#,
    r#""\uD83D\uDE00""#,
    r#""\ud800""#,
    r#""\udc00""#,
    r#""\ud800x""#,
    r#""\ud800\""#,
    r#""\ud800\n""#,
    r#""\ud800\u0041""#,
    r#""\ud800\ud800""#,
    r#""\ud800\ud800\udc00""#,
    r#""\udc00\ud800""#,
    r#""\ude00\ud83d""#,
    r#""\u0000""#,
    r#""\u001f""#,
    r#""\u00""#,
    r#""\u00g0""#,
    r#""\u""#,
    r#""\uDBFF\uDFFF""#,
    r#""\"\\\/\b\f\n\r\t""#,
    r#""\a""#,
    r#""\x41""#,
    r#""\'""#,
    r#""\U0041""#,
    r#""\""#,
    r#""\\""#,
    r#""\\\""#,
    "\"tab\there\"",
    "\"nl\nhere\"",
    "\"nul\u{0}here\"",
    "\"us\u{1f}here\"",
    "\"del\u{7f}here\"",
    "\"\u{2028}\u{2029}\"",
    "\"unterminated",
    "'single'",
    r#""a"b""#,
    // Containers.
    "[]",
    "{}",
    "[ ]",
    "{ }",
    "[1]",
    "[1,]",
    "[,1]",
    "[1,,2]",
    "[1 2]",
    "[",
    "]",
    "[[]",
    "[]]",
    "[}",
    "{]",
    "[{]}",
    r#"{"a":1}"#,
    r#"{"a":1,}"#,
    r#"{,"a":1}"#,
    r#"{"a"}"#,
    r#"{"a":}"#,
    r#"{"a"1}"#,
    r#"{"a"::1}"#,
    r#"{a:1}"#,
    r#"{1:1}"#,
    r#"{"a":1 "b":2}"#,
    r#"{"a":1,"a":2}"#,
    r#"{"\ud800":1}"#,
    r#"{"\udc00\ud800":[1]}"#,
    r#"{"k\u0000":null}"#,
    r#"{"b": [1, 2.50, "\u00e9"], "a":null}"#,
    r#"[{"a":[{"b":{}}]},[[],{}],"x",-0.5e-3,true,false,null]"#,
    r#"{"action":"join","group":"g"}"#,
    "[\n\t1 ,\r\n2\t]",
    "[1]x",
    "{}}",
    "[]]",
];

/// Whitespace-ish bytes, valid and not.
const SPACES: &[&str] = &[
    "", " ", "\t", "\n", "\r", " \t\r\n ", "\u{b}", "\u{c}", "\u{a0}",
];

#[test]
fn hand_written_corpus() {
    let mut texts: Vec<String> = Vec::new();
    for &v in VALUES {
        // At the top level.
        texts.push(v.to_owned());
        for &s in SPACES {
            texts.push(format!("{s}{v}{s}"));
        }
        // As `data`, as every known member, as an unknown member.
        for &action in ACTIONS {
            texts.push(format!(r#"{{"action":"{action}","group":"g","data":{v}}}"#));
            texts.push(format!(r#"{{"action":"{action}","token":{v}}}"#));
            texts.push(format!(r#"{{"action":"{action}","group":{v}}}"#));
            texts.push(format!(r#"{{"group":"g","action":"{action}","x":{v}}}"#));
            texts.push(format!(
                r#"{{"action":"{action}","group":"g","data":[{v}]}}"#
            ));
            texts.push(format!(
                r#"{{"action":"{action}","group":"g","data":{{"k":{v}}}}}"#
            ));
            texts.push(format!(
                r#"{{"action":"{action}","group":"g","data":{v},"x":{v}}}"#
            ));
        }
        texts.push(format!(r#"{{"action":{v},"group":"g"}}"#));
        texts.push(format!(r#"{{"action":{v}}}"#));
        texts.push(format!(
            r#"{{"action":"send","group":"g","data":{v}}}trailing"#
        ));
        // As a key.
        if v.starts_with('"') {
            texts.push(format!(r#"{{{v}:1,"action":"join","group":"g"}}"#));
            texts.push(format!(
                r#"{{"action":"send","group":"g","data":{{{v}:1}}}}"#
            ));
        }
    }
    for text in &texts {
        same(text);
    }
}

#[test]
fn members_and_keys() {
    let cases = [
        // Duplicates of every known member, and of unknown ones.
        r#"{"action":"join","action":"join","group":"g"}"#,
        r#"{"action":"join","group":"g","group":"g"}"#,
        r#"{"action":"join","group":"g","token":"a","token":"b"}"#,
        r#"{"action":"send","group":"g","data":1,"data":2}"#,
        r#"{"action":"send","group":"g","data":null,"data":null}"#,
        r#"{"action":null,"action":null}"#,
        r#"{"action":"join","group":"g","x":1,"x":2}"#,
        r#"{"action":"join","group":"g","Action":"leave"}"#,
        // Keys with escapes naming known members.
        r#"{"\u0061ction":"join","group":"g"}"#,
        r#"{"\u0061ction":"join","action":"leave","group":"g"}"#,
        r#"{"act\u0069on":"send","gr\u006fup":"g","d\u0061ta":[1]}"#,
        r#"{"action":"send","group":"g","\u0064ata":1,"data":2}"#,
        r#"{"\u0074oken":"t","action":"authenticate"}"#,
        r#"{"action\u0000":"join","group":"g"}"#,
        r#"{"actio\n":"join","group":"g"}"#,
        r#"{"\/action":"join","group":"g"}"#,
        r#"{"action":"join","group":"g","\ud800":1}"#,
        r#"{"action":"join","group":"g","\ud83d\ude00":1}"#,
        r#"{"action":"join","group":"g","\u00e9\u00e9\u00e9\u00e9":1}"#,
        r#"{"action":"join","group":"g","actionactionaction\u0041":1}"#,
        // Escaped actions.
        r#"{"action":"j\u006fin","group":"g"}"#,
        r#"{"action":"\u0073end","group":"\u0067","data":{}}"#,
        r#"{"action":"send\u0000","group":"g"}"#,
        r#"{"action":"\ud800","group":"g"}"#,
        r#"{"action":"\udc00"}"#,
        // Surrogates in members the action does or does not read.
        r#"{"action":"join","group":"\ud800"}"#,
        r#"{"action":"join","group":"g","token":"\ud800"}"#,
        r#"{"action":"authenticate","token":"\ud800"}"#,
        r#"{"action":"authenticate","token":"a\ud83d\ude00b"}"#,
        r#"{"action":"authenticate","group":"\ud800"}"#,
        r#"{"action":"dance","group":"\ud800","token":7}"#,
        r#"{"action":"send","group":"g","data":"\ud800"}"#,
        r#"{"action":"send","group":"g","data":{"\ud800":"\udc00"}}"#,
        // Types of the members an action does and does not read.
        r#"{"action":"authenticate","token":{}}"#,
        r#"{"action":"refresh","token":[]}"#,
        r#"{"action":"refresh","token":""}"#,
        r#"{"action":"refresh","group":5}"#,
        r#"{"action":"join","group":""}"#,
        r#"{"action":"leave","group":true}"#,
        r#"{"action":"send","group":"g","data":[]}"#,
        r#"{"action":"send","group":[],"data":[]}"#,
        r#"{"action":"send","data":[]}"#,
        r#"{"action":"","group":"g"}"#,
        r#"{"action":"JOIN","group":"g"}"#,
        r#"{"action":"join ","group":"g"}"#,
        r#"{"token":"t"}"#,
        r#"{"action":"authenticate"}"#,
        r#"{"action":"authenticate","token":null}"#,
        // Structure and whitespace.
        " \t\r\n{ \t\r\n\"action\" \t\r\n: \t\r\n\"join\" \t\r\n, \t\r\n\"group\" \t\r\n: \t\r\n\"g\" \t\r\n} \t\r\n",
        "{\"action\":\"join\",\"group\":\"g\"}\u{0}",
        "{\"action\":\"join\",\"group\":\"g\"}\u{b}",
        "{\"action\":\"join\",\"group\":\"g\"}\u{a0}",
        "\u{feff}{\"action\":\"join\",\"group\":\"g\"}",
        "{\"action\":\"join\",\"group\":\"g\"} {}",
        r#"{"action":"join","group":"g"},"#,
        r#"{"action":"join","group":"g""#,
        r#"{"action":"join","group":"g","#,
        r#"{"action":"join","group":"#,
        r#"{"action":"join","group""#,
        r#"{"action":"join","#,
        r#"{"#,
        r#"{""#,
        r#"{"a"#,
        r#"{}"#,
        r#"{ }"#,
        r#"{,}"#,
        r#"{"action":"join","group":"g",}"#,
        r#"{"action":"join",,"group":"g"}"#,
        r#"{"action":"join";"group":"g"}"#,
        r#"{"action"="join","group":"g"}"#,
        r#"[{"action":"join","group":"g"}]"#,
        r#"["action","join"]"#,
        r#"{"action":"send","group":"g","data":1}  "#,
        r#"{"action":"send","group":"g","data": 1 }"#,
        r#"{"action":"send","group":"g","data":	[ 1 , 2 ]	}"#,
        "",
        " ",
        "\u{0}",
        "{\u{0}}",
    ];
    for text in cases {
        same(text);
    }
}

/// `depth` nested containers (arrays, objects or both alternating) around a scalar.
fn nested(depth: usize, kind: usize) -> String {
    let mut open = String::new();
    let mut close = String::new();
    for i in 0..depth {
        let object = match kind {
            0 => false,
            1 => true,
            _ => i % 2 == 1,
        };
        if object {
            open.push_str(r#"{"k":"#);
            close.insert(0, '}');
        } else {
            open.push('[');
            close.insert(0, ']');
        }
    }
    format!("{open}1{close}")
}

#[test]
fn deep_nesting() {
    for depth in [
        1,
        2,
        63,
        64,
        65,
        126,
        127,
        128,
        129,
        130,
        255,
        256,
        257,
        INLINE_DEPTH - 1,
        INLINE_DEPTH,
        INLINE_DEPTH + 1,
        INLINE_DEPTH + 64,
        3 * INLINE_DEPTH + 17,
        20_000,
    ] {
        for kind in 0..3 {
            let v = nested(depth, kind);
            let deep = [
                v.clone(),
                format!(r#"{{"action":"send","group":"g","data":{v}}}"#),
                format!(r#"{{"action":"join","group":"g","x":{v}}}"#),
                format!(r#"{{"action":{v}}}"#),
                // One bracket too many, too few, or the wrong kind at the bottom or the top.
                format!("{v}]"),
                format!("[{v}"),
                format!(r#"{{"action":"send","group":"g","data":{v}]}}"#),
                format!(r#"{{"action":"send","group":"g","data":[{v}}}"#),
                v.replacen("1", "1]", 1),
                v.replacen("1", "1}", 1),
                v.replacen("1", "[1", 1),
                format!("{}]", &v[..v.len() - 1]),
                format!("{}}}", &v[..v.len() - 1]),
            ];
            for text in &deep {
                same(text);
            }
        }
    }
}

/// splitmix64: a small seeded generator, so every run tests the same inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// What mutations insert: JSON-significant characters and fragments.
const PIECES: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "\\",
    " ",
    "\t",
    "\n",
    "\r",
    "0",
    "1",
    "9",
    "-",
    "+",
    ".",
    "e",
    "E",
    "t",
    "r",
    "u",
    "f",
    "a",
    "l",
    "s",
    "n",
    "b",
    "/",
    "x",
    "\u{0}",
    "\u{1f}",
    "\u{7f}",
    "\u{e9}",
    "\u{1f600}",
    "\u{b}",
    "\\u",
    "\\ud83d",
    "\\ude00",
    "\\ud800",
    "\\udc00",
    "\\u0061",
    "\\n",
    "\\\"",
    "null",
    "true",
    "false",
    "\"action\"",
    "\"token\"",
    "\"group\"",
    "\"data\"",
    "\"send\"",
    "\"join\"",
    "\"leave\"",
    "\"authenticate\"",
    "\"refresh\"",
    "1e5",
    "-0",
    "0.5",
    "[[[[",
    "]]]]",
    "{\"k\":",
    "\"\":",
    ",\"x\":1",
];

/// Valid commands the mutations start from.
fn seeds(rng: &mut Rng) -> Vec<String> {
    let mut seeds: Vec<String> = [
        r#"{"action":"send","group":"load.echo.12","data":{"c":12,"s":345,"t":1234567890123}}"#,
        r#"{"action":"authenticate","token":"eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyX2lkIjoiNDIifQ.c2ln"}"#,
        r#"{"action":"refresh","token":"a.b.c"}"#,
        r#"{"action":"join","group":"room.1"}"#,
        r#"{"action":"leave","group":"room.1"}"#,
        r#"{"action":"dance"}"#,
        r#" { "group" : "g" , "action" : "send" , "data" : [ 1 , -2.5e3 , "x" , null , true ] } "#,
        r#"{"action":"send","group":"g","data":{"b": [1, 2.50, "\u00e9"], "a":null},"x":{"y":[{}]}}"#,
        r#"{"action":"j\u006fin","group":"r\u00e9\ud83d\ude00"}"#,
        r#"{"action":"send","group":"g","data":"\ud800 lone in data is fine"}"#,
        r#"{"action":"send","group":"g","data":[[[[[[[[1]]]]]]]]}"#,
        r#"[1,{"a":"b"},[],-0]"#,
        r#""just a string""#,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    // Generated commands: members in any order, of any type, with whitespace anywhere.
    let values = [
        r#""g""#,
        r#""\u0067""#,
        "null",
        "1",
        "-0.5e+2",
        "true",
        "[]",
        r#"{"a":[1,{"b":null}]}"#,
        r#""\ud83d\ude00""#,
        r#""\ud800""#,
    ];
    let ws = ["", "", "", " ", "\n\t"];
    for _ in 0..200 {
        let mut members: Vec<String> = Vec::new();
        members.push(format!(r#""action":"{}""#, rng.pick(ACTIONS)));
        for name in ["token", "group", "data", "extra", "\\u0064ata"] {
            if rng.below(3) > 0 {
                members.push(format!(r#""{name}":{}"#, rng.pick(&values)));
            }
        }
        for i in (1..members.len()).rev() {
            members.swap(i, rng.below(i + 1));
        }
        let mut text = String::from("{");
        for (i, m) in members.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(rng.pick::<&str>(&ws));
            text.push_str(&m.replace(':', &format!("{}:{}", rng.pick(&ws), rng.pick(&ws))));
            text.push_str(rng.pick::<&str>(&ws));
        }
        text.push('}');
        seeds.push(text);
    }
    seeds
}

/// Inserts, deletes or replaces characters (never splitting one, so the text stays a `str`).
fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..1 + rng.below(2) {
        let at = rng.below(chars.len() + 1);
        match rng.below(3) {
            0 => {
                let piece = rng.pick(PIECES);
                chars.splice(at..at, piece.chars());
            }
            1 if at < chars.len() => {
                let n = (1 + rng.below(3)).min(chars.len() - at);
                chars.drain(at..at + n);
            }
            _ if at < chars.len() => {
                let piece: Vec<char> = rng.pick(PIECES).chars().collect();
                chars[at] = piece[0];
            }
            _ => chars.push(*rng.pick(&['}', ']', ' ', '"'])),
        }
    }
    chars.into_iter().collect()
}

#[test]
fn pseudo_random_mutations() {
    const CASES: usize = 1_000_000;
    let mut rng = Rng(0x5eed_0fe4_e109_e5a1);
    let seeds = seeds(&mut rng);
    for seed in &seeds {
        same(seed);
    }
    let (mut ok, mut errors) = (0, [0usize; 4]);
    for _ in 0..CASES {
        let seed = rng.pick(&seeds).clone();
        let mut text = mutate(&mut rng, &seed);
        if rng.below(8) == 0 {
            text = mutate(&mut rng, &text);
        }
        match same(&text) {
            Outcome::Err(EnvelopeError::NotJson) => errors[0] += 1,
            Outcome::Err(EnvelopeError::NotAnObject) => errors[1] += 1,
            Outcome::Err(EnvelopeError::MissingAction) => errors[2] += 1,
            Outcome::Err(EnvelopeError::BadField(_)) => errors[3] += 1,
            _ => ok += 1,
        }
    }
    // The mutations reach every outcome, not only "invalid JSON".
    println!("{CASES} mutations: {ok} commands, errors {errors:?}");
    assert!(ok > CASES / 20, "{ok}");
    assert!(errors.iter().all(|&n| n > CASES / 1000), "{errors:?}");
}

/// Every string of a valid command, in the encodings a client might use for it.
#[test]
fn every_escape_of_every_member() {
    let strings = [
        "send",
        "join",
        "authenticate",
        "g",
        "caf\u{e9} \u{1f600}",
        "\"\\/\u{8}\u{c}\n\r\t",
    ];
    for s in strings {
        // Plain, every char as `\u` escapes (surrogate pairs for astral ones), upper-case hex.
        let plain = serde_json::to_string(s).unwrap();
        let mut escaped = String::from("\"");
        for unit in s.encode_utf16() {
            escaped.push_str(&format!("\\u{unit:04x}"));
        }
        escaped.push('"');
        let upper = escaped
            .replace("\\u", "\\U")
            .to_uppercase()
            .replace("\\U", "\\u");
        for v in [&plain, &escaped, &upper] {
            for action in ACTIONS {
                same(&format!(r#"{{"action":{v},"group":{v},"data":{v}}}"#));
                same(&format!(
                    r#"{{"action":"{action}","token":{v},"group":{v}}}"#
                ));
                same(&format!(r#"{{{v}:"{action}","group":"g"}}"#));
            }
        }
    }
}

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

/// How many allocations parsing `text` makes on this thread.
fn allocations(text: &str) -> usize {
    counting_alloc::allocations(|| drop(parse_command(text))).0
}

#[test]
fn no_allocation_without_escapes() {
    let deep = nested(INLINE_DEPTH, 2);
    let free = [
        r#"{"action":"send","group":"load.echo.12","data":{"c":12,"s":345,"t":1234567890123}}"#
            .to_owned(),
        r#"{"action":"send","group":"g","data":{"a":[{"b":[1,{"c":[]}]}],"d":[[[]]]}}"#.to_owned(),
        format!(r#"{{"action":"send","group":"g","data":{deep}}}"#),
        format!(r#"{{"action":"join","group":"g","x":{deep}}}"#),
        deep.clone(),
        format!("{deep}x"),
        r#"{"action":"authenticate","token":"a.b.c"}"#.to_owned(),
        r#"{"action":"authenticate"}"#.to_owned(),
        // Escapes the parser validates but does not have to decode.
        r#"{"action":"join","group":"g","token":"\u00e9\n","x":["\ud800"],"\u0078":1}"#.to_owned(),
        r#"{"action":"send","group":"g","data":{"t\u00e9xt":"\"hi\""}}"#.to_owned(),
        r#"{"\u0061ction":"join","group":"g"}"#.to_owned(),
        // Errors.
        r#"{"action":"join","action":"leave"}"#.to_owned(),
        r#"{"action":5}"#.to_owned(),
        "[1,2,{}]".to_owned(),
        "{".to_owned(),
        String::new(),
    ];
    for text in &free {
        assert_eq!(allocations(text), 0, "{text}");
    }
    // A string the command returns with escapes costs its one `String` (also when it then
    // turns out to hold a lone surrogate).
    for text in [
        r#"{"action":"join","group":"room\u002e1"}"#,
        r#"{"action":"j\u006fin","group":"room.1"}"#,
        r#"{"action":"join","group":"\ud800"}"#,
    ] {
        assert_eq!(allocations(text), 1, "{text}");
    }
    // Deeper than the inline stack: the rest of it goes to the heap (and grows as it must).
    assert!(allocations(&nested(INLINE_DEPTH + 1, 0)) >= 1);
}
