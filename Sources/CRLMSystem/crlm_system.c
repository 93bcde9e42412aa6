#define _GNU_SOURCE
#include "crlm_system.h"

#include <fcntl.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

int crlm_pipe_cloexec(int fds[2]) {
    return pipe2(fds, O_CLOEXEC);
}

int crlm_spawn_file_actions_addchdir(posix_spawn_file_actions_t *actions, const char *path) {
    return posix_spawn_file_actions_addchdir_np(actions, path);
}

int crlm_landlock_abi(void) {
#ifdef __NR_landlock_create_ruleset
    long abi = syscall(__NR_landlock_create_ruleset, (void *)0, (unsigned long)0, 1UL /* VERSION */);
    return abi > 0 ? (int)abi : 0;
#else
    return 0;
#endif
}

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int crlm_open_beneath(int dirfd, const char *path) {
    const int flags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
#ifdef __NR_openat2
    struct {
        uint64_t flags, mode, resolve;
    } how = {(uint64_t)flags, 0, 0x02 /* NO_MAGICLINKS */ | 0x04 /* NO_SYMLINKS */ | 0x08 /* BENEATH */};
    long fd = syscall(__NR_openat2, dirfd, path, &how, sizeof how);
    if (fd >= 0 || errno != ENOSYS)
        return (int)fd;
#endif
    /* No openat2: one component at a time, each O_NOFOLLOW relative to the last. */
    size_t length = strlen(path);
    char *copy = malloc(length + 1);
    if (copy == NULL) {
        errno = ENOMEM;
        return -1;
    }
    memcpy(copy, path, length + 1);
    int current = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
    char *save = NULL;
    char *part = strtok_r(copy, "/", &save);
    if (current < 0 || part == NULL) {
        int saved = current < 0 ? errno : EINVAL;
        if (current >= 0)
            close(current);
        free(copy);
        errno = saved;
        return -1;
    }
    while (part != NULL) {
        char *next_part = strtok_r(NULL, "/", &save);
        if (strcmp(part, ".") == 0 || strcmp(part, "..") == 0) {
            close(current);
            free(copy);
            errno = EINVAL;
            return -1;
        }
        int next = openat(current, part,
                          next_part == NULL ? flags : O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int saved = errno;
        close(current);
        if (next < 0) {
            free(copy);
            errno = saved;
            return -1;
        }
        current = next;
        part = next_part;
    }
    free(copy);
    return current;
}

int crlm_write_all(int fd, const void *buffer, uint64_t count) {
    const char *p = buffer;
    while (count > 0) {
        ssize_t n = write(fd, p, count > (1u << 30) ? (1u << 30) : (size_t)count);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        count -= (uint64_t)n;
    }
    return 0;
}

static int write_length(int fd, uint32_t length) {
    unsigned char header[4] = {(unsigned char)(length >> 24), (unsigned char)(length >> 16),
                               (unsigned char)(length >> 8), (unsigned char)length};
    return crlm_write_all(fd, header, 4);
}

/* Moves exactly `count` bytes already in the relay pipe to `out_fd`. */
static int drain_relay(int relay_read, int out_fd, size_t count) {
    while (count > 0) {
        ssize_t n = splice(relay_read, NULL, out_fd, NULL, count, SPLICE_F_MOVE);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0) {
            errno = EIO;
            return -1;
        }
        count -= (size_t)n;
    }
    return 0;
}

int crlm_stream_file(int in_fd, int64_t offset, uint64_t max_bytes, int out_fd, const int relay[2], uint64_t *sent) {
    const size_t chunk = 1u << 20;
    loff_t position = offset;
    uint64_t total = 0;
    char *buffer = NULL;
    int use_splice = 1;
    int input_error = 0;
    while (total < max_bytes) {
        size_t want = max_bytes - total < chunk ? (size_t)(max_bytes - total) : chunk;
        ssize_t got;
        if (use_splice) {
            got = splice(in_fd, &position, relay[1], NULL, want, SPLICE_F_MOVE);
            if (got < 0 && errno == EINTR)
                continue;
            if (got < 0 && (errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
                use_splice = 0;
                continue;
            }
            if (got < 0) {
                input_error = errno;
                break;
            }
            if (got == 0)
                break;
            if (write_length(out_fd, (uint32_t)got) != 0 || drain_relay(relay[0], out_fd, (size_t)got) != 0)
                goto output_failed;
        } else {
            if (buffer == NULL && (buffer = malloc(chunk)) == NULL) {
                input_error = ENOMEM;
                break;
            }
            got = pread(in_fd, buffer, want, position);
            if (got < 0 && errno == EINTR)
                continue;
            if (got < 0) {
                input_error = errno;
                break;
            }
            if (got == 0)
                break;
            position += got;
            if (write_length(out_fd, (uint32_t)got) != 0 || crlm_write_all(out_fd, buffer, (uint64_t)got) != 0)
                goto output_failed;
        }
        total += (uint64_t)got;
    }
    free(buffer);
    *sent = total;
    if (write_length(out_fd, 0) != 0)
        return -1;
    if (input_error) {
        errno = input_error;
        return 1;
    }
    return 0;
output_failed:
    {
        int saved = errno;
        free(buffer);
        *sent = total;
        errno = saved;
        return -1;
    }
}

/* Reads exactly `count` bytes; 0, or -1 on end of input or error. */
static int read_exact(int fd, void *buffer, size_t count) {
    char *p = buffer;
    while (count > 0) {
        ssize_t n = read(fd, p, count);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        count -= (size_t)n;
    }
    return 0;
}

int crlm_spool_records(int in_pipe, int out_fd, uint64_t expected) {
    uint64_t total = 0;
    char *buffer = NULL;
    int use_splice = 1;
    for (;;) {
        unsigned char header[4];
        if (read_exact(in_pipe, header, 4) != 0)
            goto died;
        uint32_t length = ((uint32_t)header[0] << 24) | ((uint32_t)header[1] << 16) | ((uint32_t)header[2] << 8) |
                          (uint32_t)header[3];
        if (length == 0)
            break;
        if (length > expected - total) {
            free(buffer);
            return -2;
        }
        size_t left = length;
        while (left > 0) {
            ssize_t n;
            if (use_splice) {
                n = splice(in_pipe, NULL, out_fd, NULL, left, SPLICE_F_MOVE);
                if (n < 0 && errno == EINTR)
                    continue;
                if (n < 0 && (errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
                    use_splice = 0;
                    continue;
                }
                if (n <= 0)
                    goto died;
            } else {
                if (buffer == NULL && (buffer = malloc(1u << 20)) == NULL)
                    goto died;
                size_t want = left < (1u << 20) ? left : (1u << 20);
                n = read(in_pipe, buffer, want);
                if (n < 0 && errno == EINTR)
                    continue;
                if (n <= 0 || crlm_write_all(out_fd, buffer, (uint64_t)n) != 0)
                    goto died;
            }
            left -= (size_t)n;
        }
        total += length;
    }
    free(buffer);
    return total == expected ? 0 : -2;
died:
    free(buffer);
    return -1;
}

int64_t crlm_count_lines(int fd, uint64_t max_bytes) {
    const size_t chunk = 1u << 20;
    char *buffer = malloc(chunk);
    if (buffer == NULL)
        return -1;
    uint64_t offset = 0;
    int64_t newlines = 0;
    char last = '\n';
    while (offset < max_bytes) {
        size_t want = max_bytes - offset < chunk ? (size_t)(max_bytes - offset) : chunk;
        ssize_t got = pread(fd, buffer, want, (off_t)offset);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            free(buffer);
            return -1;
        }
        if (got == 0)
            break;
        const char *p = buffer, *end = buffer + got;
        while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
            newlines++;
            p++;
        }
        last = buffer[got - 1];
        offset += (uint64_t)got;
    }
    free(buffer);
    return newlines + (last != '\n' ? 1 : 0);
}
