src/sub/util.c
