#define _GNU_SOURCE
#include "crlm_system.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

int crlm_pipe_cloexec(int fds[2]) {
    return pipe2(fds, O_CLOEXEC);
}

int crlm_landlock_abi(void) {
#ifdef __NR_landlock_create_ruleset
    long abi = syscall(__NR_landlock_create_ruleset, (void *)0, (unsigned long)0, 1UL /* VERSION */);
    return abi > 0 ? (int)abi : 0;
#else
    return 0;
#endif
}
