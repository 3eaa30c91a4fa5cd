fn main() {
    println!("cargo:rerun-if-changed=src/ops/longdouble.c");
    cc::Build::new()
        .file("src/ops/longdouble.c")
        .warnings(true)
        .compile("tessera_longdouble");
}
