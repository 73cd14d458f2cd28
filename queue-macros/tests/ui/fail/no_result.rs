use queue::job;

#[job]
async fn returns_nothing(_n: u32) {}

#[job]
async fn returns_a_string(_n: u32) -> String {
    String::new()
}

fn main() {}
