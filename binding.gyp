{
  "targets": [
    {
      "target_name": "finwait",
      "dependencies": [
        "<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"
      ],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "cflags_cc": ["-fvisibility=hidden", "-Wall", "-Wextra", "-Werror"],
      "xcode_settings": {
        "GCC_SYMBOLS_PRIVATE_EXTERN": "YES",
        "OTHER_CPLUSPLUSFLAGS": ["-Wall", "-Wextra"]
      },
      "sources": ["addon/binding.cc", "addon/errors.cc"],
      "conditions": [
        ["OS == 'linux'", {
          "defines": ["FINWAIT_LINUX_BACKEND"],
          "sources": [
            "addon/shutdown.cc",
            "addon/sockopt.cc",
            "addon/tcp_info_linux.cc",
            "addon/queues_linux.cc",
            "addon/constants_linux.cc",
            "addon/sock_diag_linux.cc",
            "addon/socket_cookie_linux.cc",
            "addon/netns_linux.cc",
            "addon/bind.cc",
            "addon/close_fd.cc",
            "addon/reuseport.cc",
            "addon/syn_filter_linux.cc",
            "addon/fd_passing_linux.cc",
            "addon/tun_linux.cc",
            "addon/fd_poll.cc",
            "addon/sock_diag_events_linux.cc",
            "addon/close_look_linux.cc",
            "addon/bpf_btf_linux.cc",
            "addon/bpf_program_linux.cc",
            "addon/bpf_linux.cc",
            "addon/cxx_compat.cc"
          ]
        }, {
          "sources": ["addon/unsupported.cc"]
        }]
      ]
    }
  ]
}
