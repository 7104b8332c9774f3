/* The smallest possible program: the benchmark suite builds it with gcc -static -O2,
 * so that a launch measures the launcher, not the dynamic loader. */
int main(void) { return 0; }
