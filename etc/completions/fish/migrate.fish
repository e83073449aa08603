complete -c migrate -l timeout -d 'With --wait: give up waiting after SECS seconds (0: no limit); the move goes on' -r
complete -c migrate -l wait -d 'Wait until the move is done and print where the process is (on a terminal, with the time so far and where it is)'
complete -c migrate -l live -d 'Move it live: its memory is sent while it runs, and it stops only for what it wrote meanwhile: from home to a node, from the node it runs on to another, or home (the node it leaves sends it). Processes larger than `[moves] live_above_mib` of the mosix.toml of the node they leave move live anyway'
complete -c migrate -l json -d 'Print JSON'
complete -c migrate -s h -l help -d 'Print help (see more with \'--help\')'
complete -c migrate -s V -l version -d 'Print version'
