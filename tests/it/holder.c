/* A process that holds a pidfile's lock as twistrs does (flock, its PID written), for
 * tests/it/ops.rs; `--version` prints the uid it runs as. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("holder uid%u\n", (unsigned)geteuid());
        return 0;
    }
    if (argc < 2) return 2;
    int fd = open(argv[1], O_RDWR);
    if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) != 0) return 1;
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%d", getpid());
    if (ftruncate(fd, 0) != 0 || write(fd, buf, n) != n) return 1;
    printf("locked\n");
    fflush(stdout);
    sleep(30);
    return 0;
}
