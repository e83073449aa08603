complete -c mosrun -l node -d 'Start the program on this node (classic: -NODE)' -r
complete -c mosrun -s j -l jobs -d 'Start the program on a random node of this list (classic: -jLIST), e.g. 2-4,7' -r
complete -c mosrun -l queue -d 'Queue the program until the cluster has room for it — a free CPU, and the memory given with -m — in priority order (lower first; default 50) then submission order, cluster-wide (classic: -q or -qPRI). The process exists meanwhile (its pid, its parent waiting); `mosq` shows and changes the queue. When its turn comes it starts on the node the queue saw a CPU free on (not locked there; at home if that node cannot take it), unless a placement (-h, -NODE, -jLIST) says where' -r
complete -c mosrun -s m -d 'With -q: the memory the program needs, in MiB; it starts when a node has that much free' -r
complete -c mosrun -s S -d 'Run the commands of a file (one shell command a line; \'#\' comments), at most N at a time, as MOSIX processes; report each that fails, with its line; exit 1 if any failed' -r
complete -c mosrun -s C -d 'Where the program\'s checkpoints go: the Nth is FILE.N (`migrate PID checkpoint`, -A). Without it, checkpoints go to ckpt.PID.N in the process\'s working directory. The program itself asks for one by sending the line `checkpoint` to $MOSIX_RUNDIR/checkpoint.sock (the answer: `ok FILE`; resumed, that read fails)' -r -F
complete -c mosrun -s A -d 'Take a checkpoint every MINUTES minutes while the program runs (or, with an `s`, seconds: -A 90s; at least 10 s)' -r
complete -c mosrun -s N -d 'Keep only the newest MAX checkpoint files (older ones are removed)' -r
complete -c mosrun -s I -d 'Show what a checkpoint file holds and what could not be restored from it, and exit (with --json: as JSON)' -r -F
complete -c mosrun -s R -d 'Resume a checkpoint in this process (see `migrate PID checkpoint`): its descriptors reopened at their paths, flags and offsets, its working directory and umask, then its memory, registers and signal state; it keeps this process\'s pid and parent. Terminals, and standard descriptors that were pipes or sockets, are mosrun\'s own; other pipes and sockets are closed unless -O gives them a file. A file it reads that changed since the checkpoint is refused unless --changed-ok (one it writes is written again from its offset). Only the checkpoint\'s user (or root, who becomes that user) resumes it, on a node of the same kernel build' -r -F
complete -c mosrun -s O -d 'With -R: open these files at these descriptors instead (e.g. -O 1=out.txt,3=log), with the access mode the descriptor had' -r
complete -c mosrun -l install-links -d 'Make the classic wrapper names (runon, runhome, nomig, cpujob, iojob, nodecay, slowdecay, fastdecay) as links to mosrun in this directory, and exit' -r -F
complete -c mosrun -s h -d 'Start the program at home'
complete -c mosrun -s b -d 'Start the program on the node where it would run best now, as the balancer sees the cluster (at home if that is here, or if that node cannot take it after all). It may move on later, unless -L'
complete -c mosrun -s F -d 'If the chosen node cannot take the program, run it anyway (at home)'
complete -c mosrun -s l -d 'Allow automatic migration (the default unless a placement is given)'
complete -c mosrun -s L -d 'No automatic migration (the default when a placement is given)'
complete -c mosrun -s c -d 'The program is CPU-bound: the balancer places it by its CPU alone, never toward the files it uses'
complete -c mosrun -s i -d 'The program is I/O-bound: never moved for load; where it runs, its reads and writes of that node\'s files (and of home files it opens there) run without a trap, as do those of any process that leaves home with a file of its destination open (docs/mfs.md)'
complete -c mosrun -s n -d 'Its statistics do not decay'
complete -c mosrun -s s -d 'Its statistics decay slowly (the default)'
complete -c mosrun -s f -d 'Its statistics decay fast'
complete -c mosrun -l changed-ok -d 'With -R: resume even if files it had open changed since the checkpoint'
complete -c mosrun -l json -d 'With -I: print JSON'
complete -c mosrun -l help -d 'Print help'
complete -c mosrun -s V -l version -d 'Print version'
