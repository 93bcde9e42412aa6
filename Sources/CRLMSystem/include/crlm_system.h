#ifndef CRLM_SYSTEM_H
#define CRLM_SYSTEM_H

/// pipe2(2) with O_CLOEXEC; returns 0 or -1 with errno set.
int crlm_pipe_cloexec(int fds[2]);

/// The Landlock ABI version the kernel offers, or 0 when it has none.
int crlm_landlock_abi(void);

#include <spawn.h>

/// posix_spawn_file_actions_addchdir_np (glibc ≥ 2.29): the child changes to `path` before it execs. Returns 0 or
/// an error number.
int crlm_spawn_file_actions_addchdir(posix_spawn_file_actions_t *actions, const char *path);

#include <stdint.h>

/// Opens `path` below the directory `dirfd` for reading with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
/// RESOLVE_NO_MAGICLINKS) and O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC: never through a symbolic link, never
/// outside the directory, never blocking on a FIFO. Where the kernel has no openat2, the path is walked component by
/// component with O_NOFOLLOW ("." and ".." refused). Returns the descriptor or -1 with errno set.
int crlm_open_beneath(int dirfd, const char *path);

/// Streams at most `max_bytes` of `in_fd`, read from `offset` on (pread-style: the file position is not used), into
/// the pipe `out_fd` as chunk records: a 4-byte big-endian length, then that many bytes; a zero length ends the
/// stream. Bytes move with splice(2) through `relay` (a pipe pair of the caller's) and never through user memory;
/// where splice is not supported, through a buffer. Stops early at the end of the file. Stores the bytes sent in
/// `*sent`. Returns 0; 1 with errno set when reading the file failed (the stream is still ended properly); -1 with
/// errno set when writing failed (EPIPE: the reader went away; the stream is broken).
int crlm_stream_file(int in_fd, int64_t offset, uint64_t max_bytes, int out_fd, const int relay[2], uint64_t *sent);

/// Copies chunk records (a 4-byte big-endian length, then that many bytes; a zero length ends them) from the pipe
/// `in_pipe` into `out_fd`, with splice(2) where it works. The lengths must add up to exactly `expected`. Returns 0;
/// -2 when they do not (the stream is not drained); -1 when the input ended or failed, or writing failed.
int crlm_spool_records(int in_pipe, int out_fd, uint64_t expected);

/// The lines in the first `max_bytes` bytes of `fd` (read with pread from offset 0): newlines, plus one when the text
/// does not end with one. An empty file has 0. Returns -1 with errno set when reading fails.
int64_t crlm_count_lines(int fd, uint64_t max_bytes);

/// Writes all of `buffer` to `fd`, retrying short writes and EINTR. Returns 0, or -1 with errno set.
int crlm_write_all(int fd, const void *buffer, uint64_t count);

#endif
