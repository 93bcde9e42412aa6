#ifndef CRLM_SYSTEM_H
#define CRLM_SYSTEM_H

/// pipe2(2) with O_CLOEXEC; returns 0 or -1 with errno set.
int crlm_pipe_cloexec(int fds[2]);

/// The Landlock ABI version the kernel offers, or 0 when it has none.
int crlm_landlock_abi(void);

#endif
