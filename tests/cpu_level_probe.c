/* cpu_level_probe LEVEL — exit 0 if this CPU supports the kernel level
 * (avx512|avx2|scalar; aarch64: neon|scalar), 77 (ctest's skip code) if not, 2 on a bad name.
 * tests/run_at_level.sh uses it to skip a level above the hardware's. */
#include "attncache.h"
#include "util/cpu.h"

#include <stdio.h>

int main(int argc, char **argv) {
    int lv;
    if (argc != 2 || ac_cpu_parse_level(argv[1], &lv) != 0) {
        fprintf(stderr, "usage: cpu_level_probe LEVEL (%s)\n", ac_last_error());
        return 2;
    }
    if (lv > ac_cpu_hw_level()) {
        printf("this CPU supports at most %s: level %s skipped\n", ac_cpu_level_name(ac_cpu_hw_level()), argv[1]);
        return 77;
    }
    return 0;
}
