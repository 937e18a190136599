# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_twistrs_global_optspecs
    string join \n version n/nodaemon o/no_save l/logfile= pidfile= d/rundir= umask= u/uid= g/gid= euid chroot= syslog prefix= r/reactor= check help-reactors originalname shutdown-timeout= workers= y/python= f/file= s/source= e/encrypted p/profile= profiler= savestats b/debug spew logger= log-rotate-size= log-keep= log-format= log-level= metrics= h/help
end

function __fish_twistrs_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_twistrs_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_twistrs_using_subcommand
    set -l cmd (__fish_twistrs_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c twistrs -n "__fish_twistrs_needs_command" -s l -l logfile -d 'Log to FILE; \'-\' for stdout, empty (--logfile=) for the default [default: stdout with -n, else twistrs.log]' -r -F
complete -c twistrs -n "__fish_twistrs_needs_command" -l pidfile -d 'Name of the pidfile; --pidfile= for none' -r
complete -c twistrs -n "__fish_twistrs_needs_command" -s d -l rundir -d 'Change to DIR before running' -r -F
complete -c twistrs -n "__fish_twistrs_needs_command" -l umask -d 'The umask to set (octal) [default: 0077 as a daemon, inherited with -n]' -r
complete -c twistrs -n "__fish_twistrs_needs_command" -s u -l uid -d 'The user to run as, a name or a number, after binding ports' -r
complete -c twistrs -n "__fish_twistrs_needs_command" -s g -l gid -d 'The group to run as [default: the --uid user\'s primary group]' -r
complete -c twistrs -n "__fish_twistrs_needs_command" -l chroot -d 'Chroot to DIR before binding ports (UNIX socket paths, TLS files and web\'s --path and --logfile are then inside DIR)' -r -F
complete -c twistrs -n "__fish_twistrs_needs_command" -l prefix -d 'The syslog ident' -r
complete -c twistrs -n "__fish_twistrs_needs_command" -s r -l reactor -d 'The reactor: \'default\' (or \'epoll\'), the only one twistrs has' -r
complete -c twistrs -n "__fish_twistrs_needs_command" -l shutdown-timeout -d 'On SIGTERM/SIGINT, wait this long for open connections to finish' -r
complete -c twistrs -n "__fish_twistrs_needs_command" -l workers -d 'Serve from N worker processes on the same listeners, supervised by a master (\'auto\': one per CPU); 1 is a single process' -r
complete -c twistrs -n "__fish_twistrs_needs_command" -s y -l python -r
complete -c twistrs -n "__fish_twistrs_needs_command" -s f -l file -r
complete -c twistrs -n "__fish_twistrs_needs_command" -s s -l source -r
complete -c twistrs -n "__fish_twistrs_needs_command" -s p -l profile -r
complete -c twistrs -n "__fish_twistrs_needs_command" -l profiler -r
complete -c twistrs -n "__fish_twistrs_needs_command" -l logger -r
complete -c twistrs -n "__fish_twistrs_needs_command" -l log-rotate-size -d 'Rotate the log file when it passes BYTES (off by default: use logrotate and SIGHUP)' -r
complete -c twistrs -n "__fish_twistrs_needs_command" -l log-keep -d 'Rotated log files to keep, FILE.1 to FILE.N' -r
complete -c twistrs -n "__fish_twistrs_needs_command" -l log-format -d 'Log lines as twistd\'s text, or one JSON object per line (as twist\'s --log-format)' -r -f -a "text\t''
json\t''"
complete -c twistrs -n "__fish_twistrs_needs_command" -l log-level -d 'Log only lines of LEVEL and above (twist\'s names; critical is error)' -r -f -a "debug\t''
info\t''
warn\t''
error\t''
critical\t''"
complete -c twistrs -n "__fish_twistrs_needs_command" -l metrics -d 'Serve Prometheus metrics on GET /metrics at ENDPOINT (e.g. tcp:9100:interface=127.0.0.1); with --workers the master serves every worker\'s figures added up' -r
complete -c twistrs -n "__fish_twistrs_needs_command" -l version -d 'Print the version and exit'
complete -c twistrs -n "__fish_twistrs_needs_command" -s n -l nodaemon -d 'Don\'t daemonize, don\'t use the default umask of 0077'
complete -c twistrs -n "__fish_twistrs_needs_command" -s o -l no_save -d 'Do not save state on shutdown (twistd\'s; twistrs never saves any)'
complete -c twistrs -n "__fish_twistrs_needs_command" -l euid -d 'Set only the effective user and group ids'
complete -c twistrs -n "__fish_twistrs_needs_command" -l syslog -d 'Log to syslog, not to a file'
complete -c twistrs -n "__fish_twistrs_needs_command" -l check -d 'Check the options, files and endpoints as a start would, start nothing, and exit 0 if a start would succeed (as nginx -t; twistd has none)'
complete -c twistrs -n "__fish_twistrs_needs_command" -l help-reactors -d 'List the available reactors and exit'
complete -c twistrs -n "__fish_twistrs_needs_command" -l originalname
complete -c twistrs -n "__fish_twistrs_needs_command" -s e -l encrypted
complete -c twistrs -n "__fish_twistrs_needs_command" -l savestats
complete -c twistrs -n "__fish_twistrs_needs_command" -s b -l debug
complete -c twistrs -n "__fish_twistrs_needs_command" -l spew
complete -c twistrs -n "__fish_twistrs_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c twistrs -n "__fish_twistrs_needs_command" -f -a "chargen" -d 'A character generator (RFC 864): an endless stream over TCP, one datagram per datagram over UDP.'
complete -c twistrs -n "__fish_twistrs_needs_command" -f -a "daytime" -d 'A daytime server (RFC 867): the UTC date and time as text, over TCP and UDP.'
complete -c twistrs -n "__fish_twistrs_needs_command" -f -a "discard" -d 'A discard server (RFC 863): reads and throws away, over TCP and UDP.'
complete -c twistrs -n "__fish_twistrs_needs_command" -f -a "dns" -d 'A domain name server (twistd\'s dns): zone files, a hosts file, a caching forwarder, secondary zones.'
complete -c twistrs -n "__fish_twistrs_needs_command" -f -a "echo" -d 'An echo server (RFC 862): sends back what it receives, over TCP and UDP.'
complete -c twistrs -n "__fish_twistrs_needs_command" -f -a "inetd" -d 'An inetd(8) replacement: serves the services of inetd.conf (twistd\'s inetd, with UDP).'
complete -c twistrs -n "__fish_twistrs_needs_command" -f -a "mail" -d 'An email service: SMTP into Maildir, POP3 out of it (twistd\'s mail).'
complete -c twistrs -n "__fish_twistrs_needs_command" -f -a "portforward" -d 'A port forwarder: each connection relayed to a destination (twistd\'s portforward).'
complete -c twistrs -n "__fish_twistrs_needs_command" -f -a "procmon" -d 'Runs programs and restarts them when they die (twistd\'s procmon).'
complete -c twistrs -n "__fish_twistrs_needs_command" -f -a "qotd" -d 'A quote of the day server (RFC 865), over TCP and UDP.'
complete -c twistrs -n "__fish_twistrs_needs_command" -f -a "socks" -d 'A SOCKS 4, 4a and 5 proxy (twistd\'s socks, with SOCKS5, logins and rules).'
complete -c twistrs -n "__fish_twistrs_needs_command" -f -a "time" -d 'A time server (RFC 868): seconds since 1900 as 32 bits, over TCP and UDP.'
complete -c twistrs -n "__fish_twistrs_needs_command" -f -a "web" -d 'A static web server: files over HTTP/1.1 (twistd\'s web --path), with sendfile.'
complete -c twistrs -n "__fish_twistrs_needs_command" -f -a "completions" -d 'Print the completion script for SHELL (bash, zsh or fish)'
complete -c twistrs -n "__fish_twistrs_needs_command" -f -a "reload" -d 'Control: make the running service reopen its logs and re-read its files (SIGHUP), without a restart'
complete -c twistrs -n "__fish_twistrs_needs_command" -f -a "restart" -d 'Control: restart the running service without downtime (re-exec, hand over sockets)'
complete -c twistrs -n "__fish_twistrs_needs_command" -f -a "status" -d 'Control: tell whether the service runs, and its PID (LSB exit status 0, 1, 3 or 4)'
complete -c twistrs -n "__fish_twistrs_needs_command" -f -a "stop" -d 'Control: stop the running service (SIGTERM, then SIGKILL after --timeout)'
complete -c twistrs -n "__fish_twistrs_using_subcommand chargen" -l listen -d 'Endpoint to listen on, repeatable: tcp:PORT, tcp6:PORT, unix:PATH or udp:PORT, with options such as :interface=127.0.0.1 [default: tcp:19]' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand chargen" -l max-connections -d 'Connections at once; accepting pauses at N and clients wait in the listen queue; 0: no limit' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand chargen" -l version -d 'Print the version and exit'
complete -c twistrs -n "__fish_twistrs_using_subcommand chargen" -s h -l help -d 'Print help'
complete -c twistrs -n "__fish_twistrs_using_subcommand daytime" -l listen -d 'Endpoint to listen on, repeatable: tcp:PORT, tcp6:PORT, unix:PATH or udp:PORT, with options such as :interface=127.0.0.1 [default: tcp:13]' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand daytime" -l max-connections -d 'Connections at once; accepting pauses at N and clients wait in the listen queue; 0: no limit' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand daytime" -l version -d 'Print the version and exit'
complete -c twistrs -n "__fish_twistrs_using_subcommand daytime" -s h -l help -d 'Print help'
complete -c twistrs -n "__fish_twistrs_using_subcommand discard" -l listen -d 'Endpoint to listen on, repeatable: tcp:PORT, tcp6:PORT, unix:PATH or udp:PORT, with options such as :interface=127.0.0.1 [default: tcp:9]' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand discard" -l max-connections -d 'Connections at once; accepting pauses at N and clients wait in the listen queue; 0: no limit' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand discard" -l version -d 'Print the version and exit'
complete -c twistrs -n "__fish_twistrs_using_subcommand discard" -s h -l help -d 'Print help'
complete -c twistrs -n "__fish_twistrs_using_subcommand dns" -s i -l interface -d 'The address to listen on [default: all IPv4 addresses]' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand dns" -s p -l port -d 'The port to listen on, UDP and TCP' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand dns" -l bindzone -d 'A BIND zone file to serve, repeatable' -r -F
complete -c twistrs -n "__fish_twistrs_using_subcommand dns" -l pyzone -d 'A Python zone file: refused (convert it to a BIND zone file)' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand dns" -l secondary -d 'Be a secondary for DOMAIN, copying it by zone transfer from IP, repeatable' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand dns" -l hosts-file -d 'Answer from a hosts file' -r -F
complete -c twistrs -n "__fish_twistrs_using_subcommand dns" -l resolv-conf -d 'The resolv.conf naming the servers to forward to (implies -r) [default: /etc/resolv.conf]' -r -F
complete -c twistrs -n "__fish_twistrs_using_subcommand dns" -l cache-size -d 'Answers the cache keeps at most; the oldest goes first' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand dns" -l allow-transfer -d 'A network allowed zone transfers (AXFR), besides loopback, repeatable' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand dns" -l listen -d 'Endpoint to listen on, repeatable: udp:PORT or tcp:PORT (tcp6:, unix:, ...) with options such as :interface=127.0.0.1 [default: udp and tcp on -i and -p]' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand dns" -l timeout -d 'Idle time before a TCP connection is closed, and the most a query may take to arrive whole' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand dns" -l transfer-timeout -d 'How long a zone transfer may take in all: a --secondary\'s fails and its retry timer takes over; an AXFR served is cut off' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand dns" -l max-connections -d 'Connections at once; accepting pauses at N and clients wait in the listen queue; 0: no limit' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand dns" -s r -l recursive -d 'Forward other questions to the name servers of --resolv-conf'
complete -c twistrs -n "__fish_twistrs_using_subcommand dns" -s c -l cache -d 'Keep forwarded answers for their TTL (negative ones by the SOA\'s)'
complete -c twistrs -n "__fish_twistrs_using_subcommand dns" -s v -l verbose -d 'Log each question and its answer'
complete -c twistrs -n "__fish_twistrs_using_subcommand dns" -l version -d 'Print the version and exit'
complete -c twistrs -n "__fish_twistrs_using_subcommand dns" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c twistrs -n "__fish_twistrs_using_subcommand echo" -l listen -d 'Endpoint to listen on, repeatable: tcp:PORT, tcp6:PORT, unix:PATH or udp:PORT, with options such as :interface=127.0.0.1 [default: tcp:7]' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand echo" -l max-connections -d 'Connections at once; accepting pauses at N and clients wait in the listen queue; 0: no limit' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand echo" -l version -d 'Print the version and exit'
complete -c twistrs -n "__fish_twistrs_using_subcommand echo" -s h -l help -d 'Print help'
complete -c twistrs -n "__fish_twistrs_using_subcommand inetd" -s f -l file -d 'Service configuration file' -r -F
complete -c twistrs -n "__fish_twistrs_using_subcommand inetd" -s r -l rpc -d 'DEPRECATED. RPC procedures table file (ignored: RPC lines are skipped)' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand inetd" -l interface -d 'Bind the lines that name no address to ADDR instead of every interface, repeatable: IPv4 addresses for tcp and udp lines, IPv6 ones for tcp6 and udp6 (a line of a family no ADDR has is skipped)' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand inetd" -l services -d 'Where service names are looked up (services(5))' -r -F
complete -c twistrs -n "__fish_twistrs_using_subcommand inetd" -s i -l nointernal -d 'Don\'t run internal services'
complete -c twistrs -n "__fish_twistrs_using_subcommand inetd" -l version -d 'Print the version and exit'
complete -c twistrs -n "__fish_twistrs_using_subcommand inetd" -s h -l help -d 'Print help'
complete -c twistrs -n "__fish_twistrs_using_subcommand mail" -s s -l smtp -d 'SMTP endpoint, repeatable [default: tcp:8025]' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand mail" -s p -l pop3 -d 'POP3 endpoint, repeatable [default: tcp:8110]' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand mail" -s d -l maildirdbmdomain -d 'A domain whose users and Maildirs live under PATH, repeatable' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand mail" -s u -l user -d 'Add a user to the last -d domain, repeatable' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand mail" -s A -l aliases -d 'An aliases(5) file for the last -d domain, reloaded when it changes' -r -F
complete -c twistrs -n "__fish_twistrs_using_subcommand mail" -s H -l hostname -d 'The name in the greeting and Received: headers [default: this host\'s FQDN, as hostname -f]' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand mail" -l auth -d 'SMTP AUTH credentials: file:PATH (user:pass lines) or memory:USER:PASS[:USER:PASS...]' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand mail" -l help-auth-type -d 'Show help for a particular authentication type, and exit' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand mail" -s R -l relay -r
complete -c twistrs -n "__fish_twistrs_using_subcommand mail" -l max-message-size -d 'Largest message accepted, as transmitted (552 above); 0 for no limit of its own (postfix\'s message_size_limit = 0), --max-data-memory then bounds a message' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand mail" -l max-data-memory -d 'Message data held in memory at once by all SMTP sessions of the process (per worker under --workers): DATA being received and messages waiting for the disk. A message that would go past it is read to its end and refused with 452 4.3.1, and the client retries later (552 5.3.4 if it is larger than the whole budget: it never could fit); a SIZE declared at MAIL gets the same answer there, before the transfer. The default, 256 MiB, takes 25 messages of the largest size at once where 1,000 sessions could otherwise hold 10 GiB' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand mail" -l max-recipients -d 'Recipients per message (452 above)' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand mail" -l certificate -d 'The certificate (chain) for STARTTLS and STLS, PEM; alone, the file holds the key too' -r -F
complete -c twistrs -n "__fish_twistrs_using_subcommand mail" -l privkey -d 'The private key of --certificate, PEM; alone, the file holds the certificate too' -r -F
complete -c twistrs -n "__fish_twistrs_using_subcommand mail" -l timeout -d 'Idle time before a session is closed (SMTP 421); also the time a command line may take to arrive, and a DATA transfer (plus its size at 500 bytes/s). Not given, POP3 sessions get 600 (RFC 1939\'s least autologout time)' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand mail" -l max-connections -d 'Connections at once; accepting pauses at N and clients wait in the listen queue; 0: no limit' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand mail" -l max-connections-per-client -d 'Sessions at once from one client address, per protocol (postfix\'s smtpd_client_connection_count_limit); 0: no limit' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand mail" -l no-smtp -d 'Disable the default SMTP listener'
complete -c twistrs -n "__fish_twistrs_using_subcommand mail" -l no-pop3 -d 'Disable the default POP3 listener'
complete -c twistrs -n "__fish_twistrs_using_subcommand mail" -s D -l default -d 'Make the last -d domain the default (other domains, bare POP3 names)'
complete -c twistrs -n "__fish_twistrs_using_subcommand mail" -s b -l bounce-to-postmaster -d 'Deliver mail for unknown users of the last -d domain to its postmaster'
complete -c twistrs -n "__fish_twistrs_using_subcommand mail" -s E -l esmtp -d 'ESMTP: EHLO with PIPELINING, 8BITMIME, SMTPUTF8, SIZE, ENHANCEDSTATUSCODES, AUTH (needs --hostname)'
complete -c twistrs -n "__fish_twistrs_using_subcommand mail" -l help-auth -d 'Show all authentication methods available, and exit'
complete -c twistrs -n "__fish_twistrs_using_subcommand mail" -l disable-anonymous
complete -c twistrs -n "__fish_twistrs_using_subcommand mail" -l auth-requires-tls -d 'Refuse SMTP AUTH and POP3 USER/PASS/APOP on connections that are not TLS (postfix\'s smtpd_tls_auth_only, dovecot\'s disable_plaintext_auth)'
complete -c twistrs -n "__fish_twistrs_using_subcommand mail" -l version -d 'Print the version and exit'
complete -c twistrs -n "__fish_twistrs_using_subcommand mail" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c twistrs -n "__fish_twistrs_using_subcommand portforward" -s p -l port -l listen -d 'Endpoint to listen on, repeatable (twistd keeps only the last): tcp:PORT, tcp6:PORT, unix:PATH, ssl:PORT:privateKey=KEY.pem, with options such as :interface=127.0.0.1 [default: tcp:6666]' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand portforward" -s h -l host -d 'The destination host to connect to: a name or an address' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand portforward" -s d -l dest_port -d 'The destination port to connect to' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand portforward" -l dest -d 'The destination as a client endpoint, instead of -h and -d: tcp:HOST:PORT[:timeout=SECONDS], unix:PATH, or ssl:HOST:PORT (TLS, the server verified) with options caCertsDir=DIR (trust roots: the *.pem certificates there; default the system\'s), hostname=NAME (the name verified and sent as SNI; default HOST), certKey=FILE[:privateKey=FILE] (a client certificate) and timeout=SECONDS' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand portforward" -l connect-timeout -d 'Give up on a destination that does not answer within SECONDS (resolving included)' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand portforward" -l timeout -d 'Close a relay after SECONDS with nothing carried either way (twistd: never)' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand portforward" -l max-connections -d 'Connections at once; accepting pauses at N and clients wait in the listen queue; 0: no limit' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand portforward" -l help -d 'Print help'
complete -c twistrs -n "__fish_twistrs_using_subcommand portforward" -l version -d 'Print the version and exit'
complete -c twistrs -n "__fish_twistrs_using_subcommand procmon" -s t -l threshold -d 'How long a process has to live before the death is considered instant, in seconds' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand procmon" -s k -l killtime -d 'How long a process being killed has to get its affairs in order before it gets killed with an unmaskable signal' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand procmon" -s m -l minrestartdelay -d 'The minimum time (in seconds) to wait before attempting to restart a process' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand procmon" -s M -l maxrestartdelay -d 'The maximum time (in seconds) to wait before attempting to restart a process' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand procmon" -l name -d 'The name of COMMAND in the log [default: the command line]' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand procmon" -l process -d 'Another program to run, repeatable; the command is split into words as a shell would (quotes, backslashes), without expanding anything' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand procmon" -l env -d 'Sets a variable in the programs\' environment, repeatable' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand procmon" -l cwd -d 'The programs\' working directory [default: twistrs\']' -r -F
complete -c twistrs -n "__fish_twistrs_using_subcommand procmon" -l user -d 'Run the programs as USER (a name or a number), with the user\'s groups; twistrs must run as root' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand procmon" -l group -d 'Run the programs with GROUP as their group [default: USER\'s]' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand procmon" -l clear-env -d 'Start the programs with no variable but --env\'s (twistd gives them none)'
complete -c twistrs -n "__fish_twistrs_using_subcommand procmon" -l version -d 'Print the version and exit'
complete -c twistrs -n "__fish_twistrs_using_subcommand procmon" -s h -l help -d 'Print help'
complete -c twistrs -n "__fish_twistrs_using_subcommand qotd" -l listen -d 'Endpoint to listen on, repeatable: tcp:PORT, tcp6:PORT, unix:PATH or udp:PORT, with options such as :interface=127.0.0.1 [default: tcp:17]' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand qotd" -l max-connections -d 'Connections at once; accepting pauses at N and clients wait in the listen queue; 0: no limit' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand qotd" -s f -l file -d 'Quotes to serve in turn: fortune style (quotes separated by \'%\' lines) or one per line; each at most 512 bytes [default: a built-in list]' -r -F
complete -c twistrs -n "__fish_twistrs_using_subcommand qotd" -l version -d 'Print the version and exit'
complete -c twistrs -n "__fish_twistrs_using_subcommand qotd" -s h -l help -d 'Print help'
complete -c twistrs -n "__fish_twistrs_using_subcommand socks" -s i -l interface -d 'The interface to listen on (twistd\'s -i)' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand socks" -s p -l port -d 'The port to listen on (twistd\'s -p)' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand socks" -s l -l log -d 'The connection log: a line per connection [default: the main log]' -r -F
complete -c twistrs -n "__fish_twistrs_using_subcommand socks" -l listen -d 'Endpoint to listen on, repeatable, as tcp:PORT:interface=127.0.0.1 or unix:PATH; with it, -i and -p add their endpoint only when given' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand socks" -l auth -d 'Require a SOCKS5 username/password login: memory:USER:PASS[:USER:PASS...] or file:PATH (user:pass lines), repeatable; SOCKS4 is then refused' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand socks" -l allow -d 'Allow destinations in NETWORK (and PORT or PORT-PORT), as 192.168.1.0/24:443 or [2001:db8::/32]:443; rules are checked in order, the first match wins' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand socks" -l deny -d 'Refuse destinations in NETWORK (and PORT), as 10.0.0.0/8 or 127.0.0.1/32:25' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand socks" -l timeout -d 'Idle time after which a relay (or a UDP association\'s connection) is closed' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand socks" -l connect-timeout -d 'Time to resolve and connect to a destination (SOCKS5 reply 0x06 after it), and for a BIND\'s peer to connect' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand socks" -l request-timeout -d 'Time for a client to send its greeting, login and request' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand socks" -l max-connections -d 'Connections at once; accepting pauses at N and clients wait in the listen queue; 0: no limit' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand socks" -l version -d 'Print the version and exit'
complete -c twistrs -n "__fish_twistrs_using_subcommand socks" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c twistrs -n "__fish_twistrs_using_subcommand time" -l listen -d 'Endpoint to listen on, repeatable: tcp:PORT, tcp6:PORT, unix:PATH or udp:PORT, with options such as :interface=127.0.0.1 [default: tcp:37]' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand time" -l max-connections -d 'Connections at once; accepting pauses at N and clients wait in the listen queue; 0: no limit' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand time" -l version -d 'Print the version and exit'
complete -c twistrs -n "__fish_twistrs_using_subcommand time" -s h -l help -d 'Print help'
complete -c twistrs -n "__fish_twistrs_using_subcommand web" -l path -d 'The directory (or single file) to serve [default: a test page]' -r -F
complete -c twistrs -n "__fish_twistrs_using_subcommand web" -l listen -d 'Endpoint to listen on, repeatable: tcp:PORT, tcp6:PORT, unix:PATH, ssl:PORT:privateKey=KEY.pem[:certKey=CERT.pem] or tls:CERTDIR[:port=443] (HTTPS), with options such as :interface=127.0.0.1 [default: tcp:8080]' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand web" -s p -l port -d 'Deprecated alias of --listen, as in twistd' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand web" -l https -d 'Serve HTTPS on PORT, as twistd: adds ssl:port=PORT:privateKey=KEY:certKey=CERT (from -k and -c) to the --listen endpoints, and the default tcp:8080 is then not used' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand web" -s c -l certificate -d 'The certificate (PEM) for --https; may hold its chain after it' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand web" -s k -l privkey -d 'The private key (PEM, not encrypted) for --https' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand web" -s i -l index -d 'Index file name, repeatable; replaces the default list index, index.html, index.htm' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand web" -s m -l mime-type -d 'Content-Type for files whose extension is unknown' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand web" -l ignore-ext -d 'Try this extension when a path is not found (/page serves page.html), repeatable' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand web" -l add-header -d 'A header added to every response, repeatable; one each response sets itself (Content-Type, Content-Length, Connection, ETag, Date, ...) is ignored, with a warning' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand web" -s l -l logfile -d 'Access log file [default: the main log]' -r -F
complete -c twistrs -n "__fish_twistrs_using_subcommand web" -l max-connections -d 'Connections at once; accepting pauses at N and clients wait in the listen queue; 0: no limit' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand web" -l timeout -d 'Close a connection after SECONDS with nothing read or written, a client whose request head takes longer (408), and one whose request body, after SECONDS, comes slower than 500 bytes/s' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand web" -l wsgi -r
complete -c twistrs -n "__fish_twistrs_using_subcommand web" -l class -r
complete -c twistrs -n "__fish_twistrs_using_subcommand web" -l resource-script -r
complete -c twistrs -n "__fish_twistrs_using_subcommand web" -l processor -r
complete -c twistrs -n "__fish_twistrs_using_subcommand web" -l allow-ignore-ext -d 'Let any extension be left out of a path'
complete -c twistrs -n "__fish_twistrs_using_subcommand web" -l no-listing -d 'Answer 403 for a directory without an index file, instead of listing it'
complete -c twistrs -n "__fish_twistrs_using_subcommand web" -l hide-dotfiles -d 'Neither list nor serve names starting with a dot (twistd does both)'
complete -c twistrs -n "__fish_twistrs_using_subcommand web" -l follow-symlinks -d 'Serve symlinks that point outside the root (refused by default; twistd follows them)'
complete -c twistrs -n "__fish_twistrs_using_subcommand web" -l display-tracebacks
complete -c twistrs -n "__fish_twistrs_using_subcommand web" -s n -l notracebacks
complete -c twistrs -n "__fish_twistrs_using_subcommand web" -s u -l user
complete -c twistrs -n "__fish_twistrs_using_subcommand web" -l personal
complete -c twistrs -n "__fish_twistrs_using_subcommand web" -l version -d 'Print the version and exit'
complete -c twistrs -n "__fish_twistrs_using_subcommand web" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c twistrs -n "__fish_twistrs_using_subcommand completions" -s h -l help -d 'Print help'
complete -c twistrs -n "__fish_twistrs_using_subcommand reload" -l pidfile -d 'The running service\'s pidfile [default: the global --pidfile, twistrs.pid]' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand reload" -s h -l help -d 'Print help'
complete -c twistrs -n "__fish_twistrs_using_subcommand restart" -l pidfile -d 'The running service\'s pidfile [default: the global --pidfile, twistrs.pid]' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand restart" -l timeout -d 'How long to wait for the new process to serve' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand restart" -s h -l help -d 'Print help'
complete -c twistrs -n "__fish_twistrs_using_subcommand status" -l pidfile -d 'The running service\'s pidfile [default: the global --pidfile, twistrs.pid]' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand status" -l json -d 'Print one JSON object: running, status, pid, pidfile, since, version, plugin, listeners, generation'
complete -c twistrs -n "__fish_twistrs_using_subcommand status" -s h -l help -d 'Print help'
complete -c twistrs -n "__fish_twistrs_using_subcommand stop" -l pidfile -d 'The running service\'s pidfile [default: the global --pidfile, twistrs.pid]' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand stop" -l timeout -d 'Seconds to wait after SIGTERM before SIGKILL [default: the service\'s --shutdown-timeout, read from its command line, plus 10; 20 with its default, and (with a warning) when its command line cannot be read]' -r
complete -c twistrs -n "__fish_twistrs_using_subcommand stop" -s h -l help -d 'Print help'
